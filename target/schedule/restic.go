package schedule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ResticHost is the host name every restic snapshot drover-target makes
// carries, so that restic's grouping (by host and path) does not change
// when the storage box is renamed or replaced.
const ResticHost = "drover-target"

// Restic is one restic repository that a schedule's runs also go to: the
// restic command users already trust for deduplicated, encrypted off-box
// copies. Each image is streamed to `restic backup --stdin`, and pruning
// is `restic forget --prune`.
type Restic struct {
	Binary       string // the restic command; "restic" from PATH when empty
	Repository   string
	PasswordFile string
	CacheDir     string // restic's cache; restic's default when empty
}

// CheckResticPasswordFile returns nil if the password file is an absolute path
// to a readable, non-empty file; its errors name the field.
func CheckResticPasswordFile(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("restic.password_file %q is not an absolute path: give the full path of the file on the storage box", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("restic.password_file %q cannot be read on the storage box: %w", path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return fmt.Errorf("restic.password_file %q is empty: put the repository's password in it", path)
	}
	return nil
}

// CheckResticRepository returns nil if repo may name a restic repository.
func CheckResticRepository(repo string) error {
	switch {
	case strings.TrimSpace(repo) == "":
		return errors.New("restic.repository is empty: give a path on the storage box or a restic URL (sftp:, rest:, s3:, ...)")
	case len(repo) > 1024:
		return fmt.Errorf("restic.repository is %d bytes, the limit is 1024", len(repo))
	}
	for i, c := range repo {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("restic.repository has the control character %q at byte %d", c, i+1)
		}
	}
	return nil
}

// Check tells whether the repository exists and opens with the password;
// a repository that is not there yet is (false, nil).
func (r Restic) Check(ctx context.Context) (initialized bool, err error) {
	if err := CheckResticRepository(r.Repository); err != nil {
		return false, err
	}
	if err := CheckResticPasswordFile(r.PasswordFile); err != nil {
		return false, err
	}
	_, stderr, err := r.run(ctx, nil, "--no-lock", "cat", "config") // reading the config needs no lock
	switch {
	case err == nil:
		return true, nil
	case strings.Contains(stderr, "Is there a repository at the following location?"):
		return false, nil
	case strings.Contains(stderr, "wrong password"):
		return false, fmt.Errorf("restic.password_file %q does not open restic repository %s: the password is wrong", r.PasswordFile, r.Repository)
	}
	return false, fmt.Errorf("restic repository %s: %w", r.Repository, err)
}

// Init creates the repository, encrypted with the password.
func (r Restic) Init(ctx context.Context) error {
	if _, _, err := r.run(ctx, nil, "init"); err != nil {
		return fmt.Errorf("create restic repository %s: %w", r.Repository, err)
	}
	return nil
}

// Ensure creates the repository unless it exists, and checks that the
// password opens it.
func (r Restic) Ensure(ctx context.Context) error {
	ok, err := r.Check(ctx)
	if err != nil || ok {
		return err
	}
	return r.Init(ctx)
}

// Backup streams data into the repository as one file, name, of a new
// snapshot made at the time at with the tags, and returns the snapshot's id.
func (r Restic) Backup(ctx context.Context, name string, data io.Reader, tags []string, at time.Time) (string, error) {
	args := []string{"backup", "--json", "--stdin", "--stdin-filename", name, "--host", ResticHost,
		"--time", at.Local().Format("2006-01-02 15:04:05")}
	for _, t := range tags {
		args = append(args, "--tag", t)
	}
	out, _, err := r.run(ctx, data, args...)
	if err != nil {
		return "", fmt.Errorf("restic backup of %s to %s: %w", name, r.Repository, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.MessageType == "summary" && m.SnapshotID != "" {
			return m.SnapshotID, nil
		}
	}
	return "", fmt.Errorf("restic backup of %s to %s: no summary in its output", name, r.Repository)
}

// Forget removes the snapshots with every one of tags that keep does not
// keep (each file's snapshots counted on their own, as restic groups by
// host and path) and prunes the data only they used.
func (r Restic) Forget(ctx context.Context, tags []string, keep Keep) error {
	args := []string{"forget", "--prune", "--group-by", "host,paths", "--tag", strings.Join(tags, ",")}
	for _, k := range []struct {
		flag string
		n    int
	}{{"--keep-last", keep.Last}, {"--keep-daily", keep.Daily}, {"--keep-weekly", keep.Weekly}, {"--keep-monthly", keep.Monthly}} {
		if k.n > 0 {
			args = append(args, k.flag, strconv.Itoa(k.n))
		}
	}
	if _, _, err := r.run(ctx, nil, args...); err != nil {
		return fmt.Errorf("restic forget in %s: %w", r.Repository, err)
	}
	return nil
}

// ResticSnapshot is a restic snapshot as `restic snapshots --json` lists
// it.
type ResticSnapshot struct {
	ID    string    `json:"id"`
	Short string    `json:"short_id"`
	Time  time.Time `json:"time"`
	Paths []string  `json:"paths"`
	Tags  []string  `json:"tags"`
}

// Snapshots lists the snapshots with every one of tags.
func (r Restic) Snapshots(ctx context.Context, tags []string) ([]ResticSnapshot, error) {
	args := []string{"snapshots", "--json"}
	if len(tags) > 0 {
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	out, _, err := r.run(ctx, nil, args...)
	if err != nil {
		return nil, fmt.Errorf("restic snapshots in %s: %w", r.Repository, err)
	}
	var snaps []ResticSnapshot
	if err := json.Unmarshal(out, &snaps); err != nil {
		return nil, fmt.Errorf("restic snapshots in %s: %w", r.Repository, err)
	}
	return snaps, nil
}

// run runs restic with the repository and password in its environment
// (never on its command line) and returns its output; its error carries
// restic's own message.
func (r Restic) run(ctx context.Context, stdin io.Reader, args ...string) (stdout []byte, stderr string, err error) {
	bin := r.Binary
	if bin == "" {
		bin = "restic"
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+r.Repository, "RESTIC_PASSWORD_FILE="+r.PasswordFile, "RESTIC_PASSWORD=", "RESTIC_PASSWORD_COMMAND=")
	if r.CacheDir != "" {
		cmd.Env = append(cmd.Env, "RESTIC_CACHE_DIR="+r.CacheDir)
	}
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Cut short (the daemon stops, the run's time is up), restic is asked
	// to stop, so that it removes its lock from the repository; killed
	// only if it has not within WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, "", fmt.Errorf("%s is not installed on the storage box (Debian: apt-get install restic)", bin)
		}
		msg := strings.TrimSpace(errb.String())
		if i := strings.LastIndex(msg, "Fatal: "); i >= 0 {
			msg = msg[i:]
		}
		if len(msg) > 500 {
			msg = msg[len(msg)-500:]
		}
		return out.Bytes(), errb.String(), fmt.Errorf("%w: %s", err, msg)
	}
	return out.Bytes(), errb.String(), nil
}
