package store

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Limits of the values the store accepts.
const (
	MaxNameLen       = 63
	MaxSizeMiB       = 1 << 34 // 16 PiB: far above any filesystem here, far below int64 overflow
	MaxInitiators    = 64
	maxInitiatorLen  = 223 // RFC 3720, 3.2.6.1
	minCHAPSecretLen = 12  // RFC 3720, 8.2.1: at least 96 bits
	maxCHAPLen       = 255
)

// ValidName reports whether s may name a volume. See CheckName for the rule.
func ValidName(s string) bool { return CheckName(s) == nil }

// CheckName returns nil if s may name a volume, or an ErrInvalid error that
// says what is wrong. The rule is that of a DNS label (RFC 1123): 1–63
// characters of a-z, 0-9 and '-', starting and ending with a letter or digit.
// Such a name is also a safe file name and a safe URL path segment.
func CheckName(s string) error {
	const rule = "use 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
	switch {
	case s == "":
		return errorf(ErrInvalid, "name is empty: %s", rule)
	case len(s) > MaxNameLen:
		return errorf(ErrInvalid, "name is %d characters long, the limit is %d: %s", len(s), MaxNameLen, rule)
	case s[0] == '-' || s[len(s)-1] == '-':
		return errorf(ErrInvalid, "name %q starts or ends with '-': %s", s, rule)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return errorf(ErrInvalid, "name %q has the uppercase letter %q: %s", s, c, rule)
		}
		return errorf(ErrInvalid, "name %q has the character %q at position %d: %s", s, c, i+1, rule)
	}
	return nil
}

// CheckSnapshotID returns nil if id has the form of a snapshot ID:
// "<volume>.<sequence>", for example "web-1.7".
func CheckSnapshotID(id string) error {
	vol, seq, ok := strings.Cut(id, ".")
	if !ok || CheckName(vol) != nil || !validSeq(seq) {
		return errorf(ErrInvalid, "snapshot id %q is malformed: snapshot ids look like <volume>.<number>, for example web-1.7", id)
	}
	return nil
}

func validSeq(s string) bool {
	if s == "" || len(s) > 20 || s[0] == '0' {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func snapshotID(volume string, seq uint64) string {
	return volume + "." + strconv.FormatUint(seq, 10)
}

// CheckSize returns nil if sizeMiB is a size the store can create.
func CheckSize(sizeMiB int64) error {
	if sizeMiB <= 0 {
		return errorf(ErrInvalid, "size_mib is %d: give a size of at least 1 (MiB)", sizeMiB)
	}
	if sizeMiB > MaxSizeMiB {
		return errorf(ErrInvalid, "size_mib is %d, above the limit of %d MiB", sizeMiB, int64(MaxSizeMiB))
	}
	return nil
}

// CheckAccess returns nil if a is a usable access setting: initiator names
// are iSCSI names (iqn., eui. or naa.), listed once each; CHAP names and
// secrets are printable ASCII without spaces, secrets 12–255 characters;
// mutual CHAP needs one-way CHAP and a secret different from it.
func CheckAccess(a Access) error {
	if len(a.Initiators) > MaxInitiators {
		return errorf(ErrInvalid, "initiators lists %d names, the limit is %d", len(a.Initiators), MaxInitiators)
	}
	seen := make(map[string]bool, len(a.Initiators))
	for i, name := range a.Initiators {
		if err := checkInitiator(name); err != nil {
			return errorf(ErrInvalid, "initiators[%d]: %v", i, err)
		}
		if seen[name] {
			return errorf(ErrInvalid, "initiators[%d]: %q is listed twice", i, name)
		}
		seen[name] = true
	}
	if a.CHAP == nil {
		return nil
	}
	c := a.CHAP
	if err := checkCHAPValue("chap.user", c.User, 1); err != nil {
		return err
	}
	if err := checkCHAPValue("chap.secret", c.Secret, minCHAPSecretLen); err != nil {
		return err
	}
	if c.MutualUser == "" && c.MutualSecret == "" {
		return nil
	}
	if err := checkCHAPValue("chap.mutual_user", c.MutualUser, 1); err != nil {
		return errorf(ErrInvalid, "%v (mutual CHAP needs both mutual_user and mutual_secret)", err)
	}
	if err := checkCHAPValue("chap.mutual_secret", c.MutualSecret, minCHAPSecretLen); err != nil {
		return errorf(ErrInvalid, "%v (mutual CHAP needs both mutual_user and mutual_secret)", err)
	}
	if c.MutualSecret == c.Secret {
		return errorf(ErrInvalid, "chap.mutual_secret equals chap.secret: RFC 3720 requires a different secret for each direction")
	}
	return nil
}

func checkInitiator(name string) error {
	if len(name) < 5 || len(name) > maxInitiatorLen {
		return fmt.Errorf("%q: an iSCSI name is 5-%d characters, like iqn.2008-11.org.linux-kvm:vm1", name, maxInitiatorLen)
	}
	prefix := name[:4]
	if prefix != "iqn." && prefix != "eui." && prefix != "naa." {
		return fmt.Errorf("%q: an iSCSI name starts with \"iqn.\", \"eui.\" or \"naa.\"", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':':
		case c >= 'A' && c <= 'Z' && prefix != "iqn.":
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("%q has uppercase letters: iqn names are lowercase (RFC 3722)", name)
		default:
			return fmt.Errorf("%q has the character %q: use a-z, 0-9, '.', '-' and ':'", name, c)
		}
	}
	return nil
}

func checkCHAPValue(field, v string, minLen int) error {
	if len(v) < minLen || len(v) > maxCHAPLen {
		if minLen > 1 {
			return errorf(ErrInvalid, "%s is %d characters: use %d-%d", field, len(v), minLen, maxCHAPLen)
		}
		return errorf(ErrInvalid, "%s is missing or longer than %d characters", field, maxCHAPLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return errorf(ErrInvalid, "%s has a character that is not printable ASCII (or is a space) at position %d", field, i+1)
		}
	}
	return nil
}

// Limits of snapshot sets.
const (
	MaxSetVolumes      = 64
	MaxLabels          = 32
	MaxLabelKeyLen     = 63
	MaxLabelValueLen   = 256
	MaxAttachments     = 16
	MaxAttachmentBytes = 1 << 20 // all attachments of a set together
)

// CheckSetID returns nil if id has the form of a snapshot set ID:
// "set-<sequence>", for example "set-12".
func CheckSetID(id string) error {
	seq, ok := strings.CutPrefix(id, "set-")
	if !ok || !validSeq(seq) {
		return errorf(ErrInvalid, "snapshot set id %q is malformed: snapshot set ids look like set-<number>, for example set-12", id)
	}
	return nil
}

func setID(seq uint64) string { return "set-" + strconv.FormatUint(seq, 10) }

// CheckSetVolumes returns nil if volumes may be the volumes of one snapshot
// set: 1-64 valid names, each listed once.
func CheckSetVolumes(volumes []string) error {
	if len(volumes) == 0 {
		return errorf(ErrInvalid, "volumes is empty: list the volumes to snapshot together (1-%d)", MaxSetVolumes)
	}
	if len(volumes) > MaxSetVolumes {
		return errorf(ErrInvalid, "volumes lists %d volumes, the limit is %d", len(volumes), MaxSetVolumes)
	}
	seen := make(map[string]int, len(volumes))
	for i, v := range volumes {
		if err := CheckName(v); err != nil {
			return errorf(ErrInvalid, "volumes[%d]: %v", i, err)
		}
		if j, ok := seen[v]; ok {
			return errorf(ErrInvalid, "volumes[%d]: %q is listed twice (also volumes[%d]): list each volume once", i, v, j)
		}
		seen[v] = i
	}
	return nil
}

// CheckLabels returns nil if labels may label a snapshot set: at most 32,
// keys of 1-63 characters of a-z, 0-9, '.', '/', '_' and '-', values of at
// most 256 bytes.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return errorf(ErrInvalid, "labels has %d entries, the limit is %d", len(labels), MaxLabels)
	}
	for _, k := range sortedKeys(labels) {
		if err := CheckLabelKey(k); err != nil {
			return errorf(ErrInvalid, "labels: %v", err)
		}
		if v := labels[k]; len(v) > MaxLabelValueLen {
			return errorf(ErrInvalid, "labels: the value of %q is %d bytes, the limit is %d", k, len(v), MaxLabelValueLen)
		}
	}
	return nil
}

// CheckLabelKey returns nil if k may be a label key.
func CheckLabelKey(k string) error {
	const rule = "use 1-63 characters of a-z, 0-9, '.', '/', '_' and '-'"
	if k == "" || len(k) > MaxLabelKeyLen {
		return errorf(ErrInvalid, "key %q is %d characters: %s", truncate(k), len(k), rule)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '/' || c == '_' || c == '-' {
			continue
		}
		return errorf(ErrInvalid, "key %q has the character %q at position %d: %s", k, c, i+1, rule)
	}
	return nil
}

// CheckAttachmentName returns nil if s may name an attachment of a snapshot
// set: like a volume name, with dots allowed ("domain.xml").
func CheckAttachmentName(s string) error {
	const rule = "use 1-63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit, like domain.xml"
	switch {
	case s == "" || len(s) > MaxNameLen:
		return errorf(ErrInvalid, "name %q is %d characters: %s", truncate(s), len(s), rule)
	case !isAlnum(s[0]) || !isAlnum(s[len(s)-1]):
		return errorf(ErrInvalid, "name %q does not start and end with a lowercase letter or digit: %s", s, rule)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '.' {
			return errorf(ErrInvalid, "name %q has the character %q at position %d: %s", s, c, i+1, rule)
		}
	}
	return nil
}

// CheckAttachments returns nil if attachments may go with a snapshot set: at
// most 16, valid names, at most 1 MiB together.
func CheckAttachments(attachments map[string][]byte) error {
	if len(attachments) > MaxAttachments {
		return errorf(ErrInvalid, "attachments has %d entries, the limit is %d", len(attachments), MaxAttachments)
	}
	total := 0
	for _, name := range sortedKeys(attachments) {
		if err := CheckAttachmentName(name); err != nil {
			return errorf(ErrInvalid, "attachments: %v", err)
		}
		total += len(attachments[name])
	}
	if total > MaxAttachmentBytes {
		return errorf(ErrInvalid, "attachments hold %d bytes together, the limit is %d (1 MiB)", total, MaxAttachmentBytes)
	}
	return nil
}

func isAlnum(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 70 {
		return s[:64] + "..."
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
