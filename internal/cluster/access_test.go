package cluster

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

func TestVolumeAccessIsDerivedFromHostsAndToken(t *testing.T) {
	t.Parallel()
	const token = "lab-token-0123456789"
	a := AccessFor([]string{"beta", "alpha"}, token)

	t.Run("every host's initiator is allowed, sorted", func(t *testing.T) {
		want := []string{"iqn.2026-11.io.drover.host:alpha", "iqn.2026-11.io.drover.host:beta"}
		if !slices.Equal(a.Initiators, want) {
			t.Errorf("initiators = %q, want %q", a.Initiators, want)
		}
	})
	t.Run("the chap user is drover", func(t *testing.T) {
		if a.CHAPUser != "drover" {
			t.Errorf("chap user = %q, want drover", a.CHAPUser)
		}
	})
	t.Run("the secret is 32 lowercase hex digits and not the token", func(t *testing.T) {
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(a.CHAPSecret) {
			t.Errorf("secret %q is not 32 lowercase hex digits", a.CHAPSecret)
		}
		if strings.Contains(a.CHAPSecret, token) || strings.Contains(token, a.CHAPSecret) {
			t.Errorf("secret %q gives the token away", a.CHAPSecret)
		}
	})
	t.Run("the secret is HMAC-SHA256 of drover-chap-v1 keyed with the token", func(t *testing.T) {
		// echo -n drover-chap-v1 | openssl dgst -sha256 -hmac lab-token-0123456789 | cut -c1-32
		const want = "17a79407e8268c5680d1d795eafe48d1"
		if got := AccessFor(nil, token).CHAPSecret; got != want {
			t.Errorf("secret = %q, want %q", got, want)
		}
	})
	t.Run("the secret is the same for the same token and differs for another", func(t *testing.T) {
		if again := AccessFor([]string{"alpha"}, token).CHAPSecret; again != a.CHAPSecret {
			t.Errorf("secret changed from %q to %q for the same token", a.CHAPSecret, again)
		}
		if other := AccessFor([]string{"alpha"}, token+"x").CHAPSecret; other == a.CHAPSecret {
			t.Errorf("two tokens give the same secret %q", other)
		}
	})
	t.Run("printing the access leaves the secret out", func(t *testing.T) {
		for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%v %+v %#v %s", a, a, a, a)} {
			if strings.Contains(s, a.CHAPSecret) {
				t.Errorf("%q shows the secret", s)
			}
		}
	})
	t.Run("a host's initiator gives its name back", func(t *testing.T) {
		if name, ok := InitiatorHost(hypervisor.HostInitiator("alpha")); !ok || name != "alpha" {
			t.Errorf("InitiatorHost(hypervisor.HostInitiator(alpha)) = %q, %t", name, ok)
		}
		if name, ok := InitiatorHost("iqn.2008-11.org.linux-kvm:1234"); ok {
			t.Errorf("a QEMU default initiator is taken for host %q", name)
		}
	})
}
