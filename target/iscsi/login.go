package iscsi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Login status class and detail (RFC 7143 11.13.5).
const (
	loginAuthFailed      = 0x0201
	loginForbidden       = 0x0202
	loginNotFound        = 0x0203
	loginUnsupportedVer  = 0x0205
	loginMissingParam    = 0x0207
	loginNoSession       = 0x020a
	loginInvalidDuring   = 0x020b
	loginInitiatorError  = 0x0200
	loginTargetError     = 0x0300
	loginOutOfResources  = 0x0302
	ourMaxRecvDataSegLen = 262144
	ourMaxBurst          = 16776192
	cmdWindow            = 128

	// loginSegMax is the longest data segment of a Login Request or
	// Response (RFC 7143: 8192 bytes during login, whatever
	// MaxRecvDataSegmentLength is declared for the full feature phase); a
	// longer announcement ends the login unread.
	loginSegMax = 8192
	// loginTextMax bounds the login text an initiator may send across
	// continuation PDUs (the C bit); real logins send about 1 KiB.
	loginTextMax = 64 << 10
)

type kv struct{ k, v string }

func parseText(b []byte) []kv {
	var out []kv
	for _, f := range bytes.Split(b, []byte{0}) {
		if len(f) == 0 {
			continue
		}
		k, v, _ := strings.Cut(string(f), "=")
		out = append(out, kv{k, v})
	}
	return out
}

func marshalText(kvs []kv) []byte {
	var b []byte
	for _, p := range kvs {
		b = append(b, p.k...)
		b = append(b, '=')
		b = append(b, p.v...)
		b = append(b, 0)
	}
	return b
}

// loginError refuses a login with a status the initiator sees.
type loginError struct {
	status uint16
	reason string
}

func (e *loginError) Error() string { return e.reason }

func refuse(status uint16, format string, args ...any) error {
	return &loginError{status: status, reason: fmt.Sprintf(format, args...)}
}

// login runs the login phase of one connection (RFC 7143 6.3): identifies
// the initiator and target, checks the allow-list, runs CHAP when the volume
// requires it, and negotiates operational parameters.
//
// It reads the connection directly, PDU by PDU, so that nothing is buffered
// for a connection that has not logged in and no byte of the full feature
// phase is read ahead.
type login struct {
	e  *Engine
	nc net.Conn

	statSN      uint32
	initiator   string
	targetName  string
	discovery   bool
	isid        [6]byte
	vol         *volume
	ex          Export
	authMethod  string
	authed      bool
	chapID      byte
	chapChal    []byte
	tpgtSent    bool
	declared    bool
	params      sessionParams
	pendingText []byte
	more        *loginReply // a response whose text goes out in pieces
}

// loginReply is one login response. Its text may be longer than the
// initiator takes in one PDU; then it goes out in pieces with the C bit
// set, each piece asked for by an empty Login Request (RFC 7143), and
// only the last piece carries the transit and the TSIH.
type loginReply struct {
	transit  bool
	csg, nsg byte
	tsih     uint16
	text     []byte // what has not been sent yet
	done     bool   // the last piece ends the login (full feature phase)
}

type sessionParams struct {
	maxSend       uint32 // the initiator's MaxRecvDataSegmentLength
	maxBurst      uint32
	firstBurst    uint32
	initialR2T    bool
	immediateData bool
}

func (l *login) run() (*session, error) {
	l.params = sessionParams{maxSend: 8192, maxBurst: 262144, firstBurst: 65536, initialR2T: true, immediateData: true}
	p := pdu{data: make([]byte, 0, loginSegMax)}
	first := true
	for {
		err := readPDU(l.nc, &p, loginSegMax)
		if first {
			l.statSN = p.u32(28)
			copy(l.isid[:], p.bhs[8:14])
		}
		var done bool
		switch {
		case err != nil:
			var tl *errSegmentTooLong
			if !errors.As(err, &tl) {
				return nil, err
			}
			l.e.metrics.countRefused(refusedSegmentTooLong)
			if p.opcode() != opLoginReq {
				return nil, fmt.Errorf("opcode %#x during login: %w", p.opcode(), err)
			}
			err = refuse(loginInitiatorError, "login pdu: %v", err)
		case p.opcode() != opLoginReq:
			return nil, fmt.Errorf("opcode %#x during login", p.opcode())
		case l.more != nil: // the initiator asks for the rest of our text
			done, err = l.reply(&p, *l.more)
		default:
			done, err = l.step(&p, first)
		}
		first = false
		if err != nil {
			var le *loginError
			if errors.As(err, &le) {
				l.write(&p, loginReply{}, false, nil, le.status)
			}
			return nil, err
		}
		if done {
			return l.session(&p), nil
		}
	}
}

// step handles one login request and sends its response; done means the
// connection has entered the full feature phase.
func (l *login) step(p *pdu, first bool) (done bool, err error) {
	b1 := p.bhs[1]
	transit, cont := b1&0x80 != 0, b1&0x40 != 0
	csg, nsg := (b1>>2)&3, b1&3
	if p.bhs[3] > 0 { // version-min
		return false, refuse(loginUnsupportedVer, "unsupported version %d", p.bhs[3])
	}
	if len(l.pendingText)+len(p.data) > loginTextMax {
		l.e.metrics.countRefused(refusedLoginTextTooLong)
		return false, refuse(loginOutOfResources, "login text longer than %d bytes", loginTextMax)
	}
	if cont {
		l.pendingText = append(l.pendingText, p.data...)
		return l.reply(p, loginReply{csg: csg})
	}
	text := append(l.pendingText, p.data...)
	l.pendingText = nil
	keys := parseText(text)
	if first {
		if err := l.identify(p, keys); err != nil {
			return false, err
		}
	}
	var resp []kv
	if !l.tpgtSent && !l.discovery {
		resp = append(resp, kv{"TargetPortalGroupTag", "1"})
		l.tpgtSent = true
	}
	switch csg {
	case 0:
		sec, rest, err := l.security(keys)
		if err != nil {
			return false, err
		}
		resp = append(resp, sec...)
		resp = append(resp, l.negotiate(rest)...)
	case 1:
		if !l.authed {
			if l.chapRequired() {
				return false, refuse(loginAuthFailed, "chap required but the initiator skipped authentication")
			}
			l.authed = true
		}
		if !l.declared {
			resp = append(resp, kv{"MaxRecvDataSegmentLength", strconv.Itoa(ourMaxRecvDataSegLen)})
			l.declared = true
		}
		resp = append(resp, l.negotiate(keys)...)
	default:
		return false, refuse(loginInvalidDuring, "login request in stage %d", csg)
	}
	r := loginReply{csg: csg, text: marshalText(resp)}
	if transit && l.authed && (nsg == 1 && csg == 0 || nsg == 3) {
		r.transit, r.nsg = true, nsg
		if nsg == 3 {
			l.params.firstBurst = min(l.params.firstBurst, l.params.maxBurst)
			r.tsih, r.done = l.e.allocTSIH(), true
		}
	}
	return l.reply(p, r)
}

func (l *login) identify(p *pdu, keys []kv) error {
	sessionType := "Normal"
	for _, k := range keys {
		switch k.k {
		case "InitiatorName":
			l.initiator = k.v
		case "TargetName":
			l.targetName = k.v
		case "SessionType":
			sessionType = k.v
		}
	}
	if l.initiator == "" {
		return refuse(loginMissingParam, "no InitiatorName")
	}
	if err := l.refuseFenced(); err != nil {
		return err
	}
	if p.u16(14) != 0 {
		return refuse(loginNoSession, "adding a connection to a session is not supported")
	}
	if sessionType == "Discovery" {
		l.discovery = true
		return nil
	}
	if l.targetName == "" {
		return refuse(loginMissingParam, "no TargetName")
	}
	l.vol = l.e.lookup(l.targetName)
	if l.vol == nil {
		return refuse(loginNotFound, "no such target")
	}
	l.ex = l.vol.export()
	if !slices.Contains(l.ex.Initiators, l.initiator) {
		return refuse(loginForbidden, "initiator not in the volume's allow-list")
	}
	return nil
}

func (l *login) chapRequired() bool { return !l.discovery && l.ex.CHAP != nil }

// security handles the security stage keys and returns the response keys and
// the keys that belong to operational negotiation.
func (l *login) security(keys []kv) (resp, rest []kv, err error) {
	var chapN, chapR, chapI, chapC string
	for _, k := range keys {
		switch k.k {
		case "InitiatorName", "TargetName", "SessionType", "InitiatorAlias":
		case "AuthMethod":
			offered := strings.Split(k.v, ",")
			switch {
			case l.chapRequired() && slices.Contains(offered, "CHAP"):
				l.authMethod = "CHAP"
			case l.chapRequired():
				return nil, nil, refuse(loginAuthFailed, "chap required, initiator offered %q", k.v)
			case slices.Contains(offered, "None"):
				l.authMethod = "None"
				l.authed = true
			default:
				return nil, nil, refuse(loginAuthFailed, "no common auth method in %q", k.v)
			}
			resp = append(resp, kv{"AuthMethod", l.authMethod})
		case "CHAP_A":
			if l.authMethod != "CHAP" || l.chapChal != nil {
				return nil, nil, refuse(loginAuthFailed, "unexpected CHAP_A")
			}
			if !slices.Contains(strings.Split(k.v, ","), "5") {
				return nil, nil, refuse(loginAuthFailed, "only CHAP with MD5 is supported")
			}
			var id [1]byte
			l.chapChal = make([]byte, 16)
			rand.Read(id[:])
			rand.Read(l.chapChal)
			l.chapID = id[0]
			resp = append(resp, kv{"CHAP_A", "5"}, kv{"CHAP_I", strconv.Itoa(int(l.chapID))},
				kv{"CHAP_C", "0x" + hex.EncodeToString(l.chapChal)})
		case "CHAP_N":
			chapN = k.v
		case "CHAP_R":
			chapR = k.v
		case "CHAP_I":
			chapI = k.v
		case "CHAP_C":
			chapC = k.v
		default:
			rest = append(rest, k)
		}
	}
	if l.authMethod == "" && !l.chapRequired() {
		l.authed = true // no AuthMethod offered: none is used
	}
	if chapR == "" {
		return resp, rest, nil
	}
	if l.authMethod != "CHAP" || l.chapChal == nil || l.authed {
		return nil, nil, refuse(loginAuthFailed, "unexpected CHAP_R")
	}
	got, err := decodeBinary(chapR)
	if err != nil {
		return nil, nil, refuse(loginAuthFailed, "bad CHAP_R")
	}
	want := chapResponse(l.chapID, l.ex.CHAP.Secret, l.chapChal)
	userOK := subtle.ConstantTimeCompare([]byte(chapN), []byte(l.ex.CHAP.User)) == 1
	if subtle.ConstantTimeCompare(got, want) != 1 || !userOK {
		return nil, nil, refuse(loginAuthFailed, "chap credentials do not match")
	}
	if chapI != "" || chapC != "" {
		if l.ex.CHAP.MutualUser == "" {
			return nil, nil, refuse(loginAuthFailed, "initiator asked for mutual chap, none configured")
		}
		id, err := strconv.ParseUint(chapI, 0, 8)
		if err != nil {
			return nil, nil, refuse(loginAuthFailed, "bad CHAP_I")
		}
		chal, err := decodeBinary(chapC)
		if err != nil || len(chal) < 8 || bytes.Equal(chal, l.chapChal) {
			return nil, nil, refuse(loginAuthFailed, "bad CHAP_C")
		}
		resp = append(resp, kv{"CHAP_N", l.ex.CHAP.MutualUser},
			kv{"CHAP_R", "0x" + hex.EncodeToString(chapResponse(byte(id), l.ex.CHAP.MutualSecret, chal))})
	}
	l.authed = true
	return resp, rest, nil
}

func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

func decodeBinary(s string) ([]byte, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		return hex.DecodeString(s[2:])
	}
	if len(s) > 2 && (s[:2] == "0b" || s[:2] == "0B") {
		return base64.StdEncoding.DecodeString(s[2:])
	}
	return nil, errors.New("binary value must start with 0x or 0b")
}

// negotiate answers operational keys (RFC 7143 13) with the negotiated result.
func (l *login) negotiate(keys []kv) []kv {
	var resp []kv
	num := func(v string) (uint64, bool) {
		n, err := strconv.ParseUint(v, 0, 32)
		return n, err == nil
	}
	yes := func(v string) bool { return v == "Yes" }
	yn := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	for _, k := range keys {
		switch k.k {
		case "InitiatorName", "InitiatorAlias", "TargetName", "SessionType":
		case "HeaderDigest", "DataDigest":
			if slices.Contains(strings.Split(k.v, ","), "None") {
				resp = append(resp, kv{k.k, "None"})
			} else {
				resp = append(resp, kv{k.k, "Reject"})
			}
		case "MaxConnections":
			resp = append(resp, kv{k.k, "1"})
		case "InitialR2T":
			l.params.initialR2T = yes(k.v)
			resp = append(resp, kv{k.k, yn(l.params.initialR2T)})
		case "ImmediateData":
			l.params.immediateData = yes(k.v)
			resp = append(resp, kv{k.k, yn(l.params.immediateData)})
		case "MaxRecvDataSegmentLength":
			if n, ok := num(k.v); ok && n >= 512 {
				l.params.maxSend = uint32(min(n, 1<<24-1))
			}
		case "MaxBurstLength":
			if n, ok := num(k.v); ok && n >= 512 {
				l.params.maxBurst = uint32(min(n, ourMaxBurst))
				resp = append(resp, kv{k.k, strconv.Itoa(int(l.params.maxBurst))})
			} else {
				resp = append(resp, kv{k.k, "Reject"})
			}
		case "FirstBurstLength":
			if n, ok := num(k.v); ok && n >= 512 {
				l.params.firstBurst = uint32(min(n, ourMaxBurst))
				resp = append(resp, kv{k.k, strconv.Itoa(int(l.params.firstBurst))})
			} else {
				resp = append(resp, kv{k.k, "Reject"})
			}
		case "DefaultTime2Wait":
			n, _ := num(k.v)
			resp = append(resp, kv{k.k, strconv.Itoa(int(max(n, 2)))})
		case "DefaultTime2Retain":
			n, _ := num(k.v)
			resp = append(resp, kv{k.k, strconv.Itoa(int(min(n, 20)))})
		case "MaxOutstandingR2T", "ErrorRecoveryLevel":
			v := "1"
			if k.k == "ErrorRecoveryLevel" {
				v = "0"
			}
			resp = append(resp, kv{k.k, v})
		case "DataPDUInOrder", "DataSequenceInOrder":
			resp = append(resp, kv{k.k, "Yes"})
		case "IFMarker", "OFMarker":
			resp = append(resp, kv{k.k, "No"})
		case "IFMarkInt", "OFMarkInt":
			resp = append(resp, kv{k.k, "Irrelevant"})
		default:
			resp = append(resp, kv{k.k, "NotUnderstood"})
		}
	}
	return resp
}

// reply sends a login response, or its next piece when its text is longer
// than the initiator takes in one PDU; done reports that the last piece of
// a response ending the login went out.
func (l *login) reply(req *pdu, r loginReply) (done bool, err error) {
	limit := int(min(loginSegMax, l.params.maxSend))
	if len(r.text) > limit {
		piece := r.text[:limit]
		r.text = r.text[limit:]
		l.more = &r
		return false, l.write(req, loginReply{csg: r.csg}, true, piece, 0)
	}
	l.more = nil
	return r.done, l.write(req, r, false, r.text, 0)
}

// write sends one Login Response PDU; cont sets the C bit (and then r has
// no transit).
func (l *login) write(req *pdu, r loginReply, cont bool, text []byte, status uint16) error {
	var h pdu
	h.bhs[0] = opLoginResp
	h.bhs[1] = r.csg << 2
	if r.transit {
		h.bhs[1] |= 0x80 | r.nsg
	}
	if cont {
		h.bhs[1] |= 0x40
	}
	h.setDataLen(len(text))
	copy(h.bhs[8:14], req.bhs[8:14])
	h.put16(14, r.tsih)
	h.put32(16, req.itt())
	h.put32(24, l.statSN)
	l.statSN++
	h.put32(28, req.cmdSN())
	h.put32(32, req.cmdSN()+cmdWindow-1)
	h.bhs[36] = byte(status >> 8)
	h.bhs[37] = byte(status)
	return writePDU(l.nc, &h.bhs, text)
}

func (l *login) session(last *pdu) *session {
	s := &session{
		e:         l.e,
		vol:       l.vol,
		nc:        l.nc,
		initiator: l.initiator,
		targetIQN: l.targetName,
		remote:    l.nc.RemoteAddr().String(),
		isid:      l.isid,
		since:     time.Now(),
		params:    l.params,
		statSN:    l.statSN,
		pending:   map[uint32]*writeTask{},
		sem:       make(chan struct{}, cmdWindow),
		done:      make(chan struct{}),
		closed:    make(chan struct{}),
	}
	s.expCmdSN.Store(last.cmdSN())
	return s
}
