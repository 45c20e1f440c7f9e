package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// chapSecretMessage is what the storage token signs to make the CHAP
// secret; changing it changes every volume's secret.
const chapSecretMessage = "drover-chap-v1"

// Access is who may log in to a volume Drover manages: the initiator of
// every configured host, with CHAP.
type Access struct {
	Initiators []string // sorted
	CHAPUser   string
	CHAPSecret string // never logged, never in state
}

// String leaves the secret out, so that printing an access by mistake
// does not leak it.
func (a Access) String() string {
	return "initiators " + strings.Join(a.Initiators, ", ") + ", chap user " + a.CHAPUser
}

// GoString keeps %#v from printing the secret too.
func (a Access) GoString() string { return a.String() }

// AccessFor derives the access of every volume from the names of the
// configured hosts and the storage token. The CHAP secret is the first 32
// hex digits of HMAC-SHA256 over chapSecretMessage keyed with the token:
// stable for a token, and not the token, which also lets its holder manage
// every volume.
func AccessFor(hostNames []string, token string) Access {
	initiators := make([]string, 0, len(hostNames))
	for _, name := range hostNames {
		initiators = append(initiators, hypervisor.HostInitiator(name))
	}
	sort.Strings(initiators)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(chapSecretMessage))
	return Access{
		Initiators: initiators,
		CHAPUser:   hypervisor.CHAPUser,
		CHAPSecret: hex.EncodeToString(mac.Sum(nil))[:32],
	}
}

// InitiatorHost is the host name in a host's initiator IQN, and whether
// iqn is one.
func InitiatorHost(iqn string) (string, bool) {
	name, ok := strings.CutPrefix(iqn, hypervisor.InitiatorPrefix)
	return name, ok && name != ""
}
