package provider

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// hostInitiatorPrefix starts the initiator IQN of every host: a host's QEMU
// logs in to the storage box as hostInitiatorPrefix + its name in the
// provider block. The hypervisor writes the same into the domains' disks.
const hostInitiatorPrefix = hypervisor.InitiatorPrefix

// chapUser is the CHAP user every host logs in as.
const chapUser = hypervisor.CHAPUser

// chapSecretMessage is what the storage token signs to make the CHAP
// secret; changing it changes every volume's secret.
const chapSecretMessage = "drover-chap-v1"

// volumeAccess is who may log in to a volume the provider manages: the
// initiator of every configured host, with CHAP.
type volumeAccess struct {
	Initiators []string // sorted
	CHAPUser   string
	CHAPSecret string // never logged, never in state
}

// String leaves the secret out, so that printing an access by mistake
// does not leak it.
func (a volumeAccess) String() string {
	return "initiators " + strings.Join(a.Initiators, ", ") + ", chap user " + a.CHAPUser
}

// GoString keeps %#v from printing the secret too.
func (a volumeAccess) GoString() string { return a.String() }

// accessFor derives the access of every volume from the names of the
// provider's hosts and the storage token. The CHAP secret is the first 32
// hex digits of HMAC-SHA256 over chapSecretMessage keyed with the token:
// stable for a token, and not the token, which also lets its holder manage
// every volume.
func accessFor(hostNames []string, token string) volumeAccess {
	initiators := make([]string, 0, len(hostNames))
	for _, name := range hostNames {
		initiators = append(initiators, hostInitiator(name))
	}
	sort.Strings(initiators)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(chapSecretMessage))
	return volumeAccess{
		Initiators: initiators,
		CHAPUser:   chapUser,
		CHAPSecret: hex.EncodeToString(mac.Sum(nil))[:32],
	}
}

// hostInitiator is the initiator IQN of the host called name in the
// provider block.
func hostInitiator(name string) string { return hostInitiatorPrefix + name }

// initiatorHost is the host name in a host's initiator IQN, and whether
// iqn is one.
func initiatorHost(iqn string) (string, bool) {
	name, ok := strings.CutPrefix(iqn, hostInitiatorPrefix)
	return name, ok && name != ""
}

// volumeAccess is the access every volume of this configuration gets. It
// needs the storage settings.
func (c config) volumeAccess() volumeAccess {
	names := make([]string, 0, len(c.Hosts))
	for _, h := range c.Hosts {
		names = append(names, h.Name)
	}
	token := ""
	if c.Storage != nil {
		token = c.Storage.Token
	}
	return accessFor(names, token)
}
