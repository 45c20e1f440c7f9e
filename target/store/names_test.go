package store

import (
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestVolumeNamesFollowTheDNSLabelRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"web-1", true},
		{"0db", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"-lead", false},
		{"trail-", false},
		{"Web", false},
		{"a_b", false},
		{"a.b", false},
		{"..", false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"a\x00", false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestSnapshotIDsHaveAVolumeAndANumber(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"web.1", true},
		{"web-1.12345", true},
		{"web", false},
		{"web.", false},
		{".1", false},
		{"web.01", false},
		{"web.1.2", false},
		{"Web.1", false},
		{"web.-1", false},
		{"../x.1", false},
		{"web.99999999999999999999", false},
	} {
		if got := CheckSnapshotID(tc.id) == nil; got != tc.ok {
			t.Errorf("CheckSnapshotID(%q) ok = %v, want %v", tc.id, got, tc.ok)
		}
	}
}

func TestVolumeAccessSettingsAreChecked(t *testing.T) {
	t.Parallel()
	good := &wire.CHAP{User: "user", Secret: "0123456789ab"}
	for _, tc := range []struct {
		name   string
		access Access
		want   string // substring of the error; "" means valid
	}{
		{"no initiators and no CHAP", Access{}, ""},
		{"an iqn initiator", Access{Initiators: []string{"iqn.2008-11.org.linux-kvm:abc"}}, ""},
		{"an eui initiator", Access{Initiators: []string{"eui.02004567A425678D"}}, ""},
		{"one-way CHAP", Access{CHAP: good}, ""},
		{"mutual CHAP", Access{CHAP: &wire.CHAP{User: "u", Secret: "0123456789ab", MutualUser: "t", MutualSecret: "ba9876543210"}}, ""},
		{"an initiator without prefix", Access{Initiators: []string{"host-a"}}, "initiators[0]"},
		{"an uppercase iqn", Access{Initiators: []string{"iqn.2008-11.ORG.x"}}, "lowercase"},
		{"an initiator listed twice", Access{Initiators: []string{"iqn.2000-01.a:b", "iqn.2000-01.a:b"}}, "twice"},
		{"a space in an initiator", Access{Initiators: []string{"iqn.2000-01.a: b"}}, "initiators[0]"},
		{"a short secret", Access{CHAP: &wire.CHAP{User: "u", Secret: "short"}}, "chap.secret"},
		{"no CHAP user", Access{CHAP: &wire.CHAP{Secret: "0123456789ab"}}, "chap.user"},
		{"a mutual user without secret", Access{CHAP: &wire.CHAP{User: "u", Secret: "0123456789ab", MutualUser: "t"}}, "chap.mutual_secret"},
		{"the same secret both ways", Access{CHAP: &wire.CHAP{User: "u", Secret: "0123456789ab", MutualUser: "t", MutualSecret: "0123456789ab"}}, "different secret"},
	} {
		err := CheckAccess(tc.access)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: CheckAccess = %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: CheckAccess = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}

// FuzzValidName checks that every accepted name is safe as a file name and
// as a URL path segment, and that the checker never panics.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "web-1", "", "-a", "a-", "..", "A", strings.Repeat("z", 64), "a/b", "%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := CheckName(name)
		if err != nil {
			if err.Error() == "" {
				t.Errorf("CheckName(%q) returned an empty message", name)
			}
			return
		}
		if len(name) == 0 || len(name) > MaxNameLen {
			t.Errorf("CheckName accepted %q of length %d", name, len(name))
		}
		if name == "." || name == ".." || strings.ContainsAny(name, "/\\%.?#\x00 ") || name[0] == '-' {
			t.Errorf("CheckName accepted the unsafe name %q", name)
		}
		if strings.ToLower(name) != name {
			t.Errorf("CheckName accepted the uppercase name %q", name)
		}
	})
}
