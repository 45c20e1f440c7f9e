package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	fencedA = "iqn.2026-11.io.drover.test:alpha"
	fencedB = "iqn.2026-11.io.drover.test:beta"
)

func TestFencesAreKeptAcrossReopening(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStore(t, dir, Options{})
	before := time.Now().UTC().Truncate(time.Second)
	f, created, err := s.PutFence(fencedB, "host beta declared failed")
	if err != nil || !created {
		t.Fatalf("PutFence(%s): got created %v, error %v; want a new fence", fencedB, created, err)
	}
	if f.Initiator != fencedB || f.Reason != "host beta declared failed" || f.CreatedAt.Before(before) || f.CreatedAt.Location() != time.UTC {
		t.Errorf("PutFence(%s): got %+v, want the initiator, the reason and a UTC time from now on", fencedB, f)
	}
	if _, _, err := s.PutFence(fencedA, "host alpha declared failed"); err != nil {
		t.Fatal(err)
	}
	// Again with another reason: the same fence, first time kept.
	again, created, err := s.PutFence(fencedB, "still failed")
	if err != nil || created || !again.CreatedAt.Equal(f.CreatedAt) || again.Reason != "still failed" {
		t.Errorf("PutFence again: got %+v, created %v, error %v; want the new reason, the first CreatedAt %s, not created", again, created, err, f.CreatedAt)
	}
	s.Close()

	s = openTestStore(t, dir, Options{})
	got, err := s.Fences()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Initiator != fencedA || got[1].Initiator != fencedB || got[1].Reason != "still failed" || !got[1].CreatedAt.Equal(f.CreatedAt) {
		t.Fatalf("Fences after reopening: got %+v, want alpha then beta (reason \"still failed\", since %s)", got, f.CreatedAt)
	}
	if g, err := s.GetFence(fencedA); err != nil || g.Reason != "host alpha declared failed" {
		t.Errorf("GetFence(%s): got %+v, %v", fencedA, g, err)
	}
	if err := s.DeleteFence(fencedA); err != nil {
		t.Fatalf("DeleteFence(%s): %v", fencedA, err)
	}
	if err := s.DeleteFence(fencedA); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteFence of a lifted fence: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetFence(fencedA); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetFence of a lifted fence: got %v, want ErrNotFound", err)
	}
	s.Close()

	s = openTestStore(t, dir, Options{})
	if got, err := s.Fences(); err != nil || len(got) != 1 || got[0].Initiator != fencedB {
		t.Errorf("Fences after lifting one and reopening: got %+v, %v; want beta only", got, err)
	}
}

func TestBadFencesAreRefusedWithWhatIsWrong(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	for _, tc := range []struct {
		name, initiator, reason, want string
	}{
		{"an empty initiator", "", "x", "5-223 characters"},
		{"a name that is too short", "iqn.", "x", "5-223 characters"},
		{"a host name", "alpha", "x", `starts with "iqn.", "eui." or "naa."`},
		{"an iqn with uppercase letters", "iqn.2026-11.io.drover:Alpha", "x", "uppercase"},
		{"an iqn with a space", "iqn.2026-11.io.drover:al pha", "x", "the character ' '"},
		{"an iqn that is too long", "iqn.2026-11.io.drover:" + strings.Repeat("a", 220), "x", "5-223 characters"},
		{"an empty reason", fencedA, "", "reason is empty"},
		{"a reason that is too long", fencedA, strings.Repeat("r", 257), "257 bytes, the limit is 256"},
		{"a reason with a newline", fencedA, "a\nb", "control character"},
		{"a reason that is not UTF-8", fencedA, "\xff", "not valid UTF-8"},
	} {
		if _, _, err := s.PutFence(tc.initiator, tc.reason); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: PutFence(%q, %q): got %v, want ErrInvalid saying %q", tc.name, tc.initiator, tc.reason, err, tc.want)
		}
	}
	for _, ok := range []string{fencedA, "eui.0123456789ABCDEF", "naa.60014055f2c7c4c1"} {
		if _, _, err := s.PutFence(ok, "declared failed"); err != nil {
			t.Errorf("PutFence(%q): got %v, want it fenced", ok, err)
		}
	}
	if got, _ := s.Fences(); len(got) != 3 {
		t.Errorf("fences after the refusals: got %d, want the 3 good ones", len(got))
	}
}

func TestOpenRefusesAFenceRecordItCannotRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed(t, dir)
	putRawRecord(t, dir, bucketFences, fencedA, []byte("{not json"))
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "fence record") {
		t.Errorf("Open with a broken fence record: got %v, want an error naming it (a fence is never dropped silently)", err)
	}
}
