package hypervisor

import "testing"

func TestLooksLikeUUID(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a11": true,
		"6F1C1A4E-8E8B-4A0C-9D57-1F1B7E0F2A11": true,
		"vm1":                                  false,
		"6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a1g": false,
		"6f1c1a4e08e8b-4a0c-9d57-1f1b7e0f2a11": false,
	} {
		if got := looksLikeUUID(s); got != want {
			t.Errorf("looksLikeUUID(%q) = %v, want %v", s, got, want)
		}
	}
}
