package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/server"
)

// admin runs `volume`, `snapshot`, `snapshot-set`, `session`, `fence` and `schedule` subcommands
// against the API: it reads the flags and the token, then dispatches the
// verb to its function in adminCommands.
func admin(ctx context.Context, noun string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s needs a subcommand\n\n%s", noun, usage)
		return errUsage
	}
	verb := args[0]
	fs := flag.NewFlagSet(noun+" "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "http://127.0.0.1:3261", "drover-target API base URL")
	tokenFile := fs.String("token-file", "", "file holding the API token (default: $DROVER_STORAGE_TOKEN)")
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed the API's TLS certificate (default: the system's roots)")
	call := adminCall{labels: map[string]string{}}
	call.defineFlags(fs)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return errUsage
	}
	token := getenv("DROVER_STORAGE_TOKEN")
	if *tokenFile != "" {
		if token, err = server.ReadTokenFile(*tokenFile); err != nil {
			return err
		}
	}
	if token == "" {
		return fmt.Errorf("no API token: pass --token-file FILE or set DROVER_STORAGE_TOKEN")
	}
	var opts []storage.Option
	if *caFile != "" {
		opts = append(opts, storage.WithCAFile(*caFile))
	}
	if call.c, err = storage.New(*endpoint, token, opts...); err != nil {
		return err
	}
	name := noun + " " + verb
	cmd, ok := adminCommands[name]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", name, usage)
		return errUsage
	}
	if len(pos) != cmd.n && !(cmd.atLeast && len(pos) >= cmd.n) {
		return fmt.Errorf("%s takes %s, got %d argument(s)", name, cmd.args, len(pos))
	}
	call.pos = pos
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	call.out = tw
	return cmd.run(ctx, call)
}

// adminCmd is one verb of the admin CLI.
type adminCmd struct {
	args    string // what it takes, as its error for a wrong count says
	n       int    // how many arguments it takes
	atLeast bool   // n or more
	run     func(ctx context.Context, a adminCall) error
}

// adminCommands maps "noun verb" to its command; it is never written.
var adminCommands = map[string]adminCmd{
	"volume ls":          {"no arguments", 0, false, volumeList},
	"volume create":      {"NAME SIZE_MIB", 2, false, volumeCreate},
	"volume grow":        {"NAME SIZE_MIB", 2, false, volumeGrow},
	"volume upload":      {"NAME IMAGE_FILE", 2, false, volumeUpload},
	"volume rm":          {"NAME", 1, false, volumeRemove},
	"snapshot ls":        {"VOLUME", 1, false, snapshotList},
	"snapshot create":    {"VOLUME", 1, false, snapshotCreate},
	"snapshot rm":        {"ID", 1, false, snapshotRemove},
	"snapshot-set ls":    {"no arguments", 0, false, setList},
	"snapshot-set label": {"ID KEY=VALUE... (the set's new labels, all of them)", 2, true, setLabel},
	"snapshot-set rm":    {"ID", 1, false, setRemove},
	"session ls":         {"no arguments", 0, false, sessionList},
	"fence ls":           {"no arguments", 0, false, fenceList},
	"fence add":          {"INITIATOR REASON... (why it is fenced)", 2, true, fenceAdd},
	"fence rm":           {"INITIATOR", 1, false, fenceRemove},
	"schedule ls":        {"no arguments", 0, false, scheduleList},
	"schedule rm":        {"ID", 1, false, scheduleRemove},
}

// adminCall is one run of a command: the client, the arguments, the flags
// and where the output goes.
type adminCall struct {
	c   *storage.Client
	pos []string
	out io.Writer

	force      bool              // volume rm
	format     string            // volume upload
	initiators []string          // volume create
	labels     map[string]string // snapshot-set ls
}

// defineFlags defines every command's flags on fs, into a.
func (a *adminCall) defineFlags(fs *flag.FlagSet) {
	fs.BoolVar(&a.force, "force", false, "volume rm: delete even while initiators are logged in")
	fs.StringVar(&a.format, "format", "", "volume upload: raw or qcow2 (default: detect)")
	fs.Func("initiator", "volume create: an initiator IQN allowed to log in (repeat for more)", func(s string) error {
		a.initiators = append(a.initiators, s)
		return nil
	})
	fs.Func("label", "snapshot-set ls: only sets with this label, KEY=VALUE (repeat: all must match)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: give KEY=VALUE, e.g. --label drover.io/vm=web-1", s)
		}
		if old, dup := a.labels[k]; dup && old != v {
			return fmt.Errorf("%q: label %s is already given as %q", s, k, old)
		}
		a.labels[k] = v
		return nil
	})
}

const (
	volumeHeader = "NAME\tSIZE_MIB\tIQN\tLUN\tINITIATORS\tCHAP\tCREATED"
	snapHeader   = "ID\tVOLUME\tSIZE_MIB\tMETHOD\tCREATED"
	setHeader    = "ID\tCREATED\tSNAPSHOTS\tMETHOD\tHOLD_MS\tLABELS\tATTACHMENTS"
)

func volumeList(ctx context.Context, a adminCall) error {
	vols, err := a.c.ListVolumes(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, volumeHeader)
	for _, v := range vols {
		printVolume(a.out, v)
	}
	return nil
}

func volumeCreate(ctx context.Context, a adminCall) error {
	size, err := sizeArg(a.pos[1])
	if err != nil {
		return err
	}
	v, err := a.c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: a.pos[0], SizeMiB: size, Initiators: a.initiators})
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, volumeHeader)
	printVolume(a.out, v)
	return nil
}

func volumeGrow(ctx context.Context, a adminCall) error {
	size, err := sizeArg(a.pos[1])
	if err != nil {
		return err
	}
	v, err := a.c.GrowVolume(ctx, a.pos[0], size)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "%s is now %d MiB\n", v.Name, v.SizeMiB)
	return nil
}

func volumeUpload(ctx context.Context, a adminCall) error {
	f, err := os.Open(a.pos[1])
	if err != nil {
		return err
	}
	defer f.Close()
	if err := a.c.UploadVolume(ctx, a.pos[0], f, a.format); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "uploaded %s into %s\n", a.pos[1], a.pos[0])
	return nil
}

func volumeRemove(ctx context.Context, a adminCall) error {
	if err := a.c.DeleteVolume(ctx, a.pos[0], a.force); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "deleted volume %s\n", a.pos[0])
	return nil
}

func snapshotList(ctx context.Context, a adminCall) error {
	snaps, err := a.c.ListSnapshots(ctx, a.pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, snapHeader)
	for _, s := range snaps {
		printSnapshot(a.out, s)
	}
	return nil
}

func snapshotCreate(ctx context.Context, a adminCall) error {
	s, err := a.c.CreateSnapshot(ctx, a.pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, snapHeader)
	printSnapshot(a.out, s)
	return nil
}

func snapshotRemove(ctx context.Context, a adminCall) error {
	if err := a.c.DeleteSnapshot(ctx, a.pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "deleted snapshot %s\n", a.pos[0])
	return nil
}

func setList(ctx context.Context, a adminCall) error {
	sets, err := a.c.ListSnapshotSets(ctx, a.labels)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, setHeader)
	for _, s := range sets {
		printSnapshotSet(a.out, s)
	}
	return nil
}

func setLabel(ctx context.Context, a adminCall) error {
	labels, err := labelArgs(a.pos[1:])
	if err != nil {
		return err
	}
	set, err := a.c.SetSnapshotSetLabels(ctx, a.pos[0], labels)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, setHeader)
	printSnapshotSet(a.out, set)
	return nil
}

func setRemove(ctx context.Context, a adminCall) error {
	if err := a.c.DeleteSnapshotSet(ctx, a.pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "deleted snapshot set %s and its snapshots\n", a.pos[0])
	return nil
}

func sessionList(ctx context.Context, a adminCall) error {
	ss, err := a.c.Sessions(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, "VOLUME\tINITIATOR\tREMOTE\tSINCE")
	for _, s := range ss {
		fmt.Fprintf(a.out, "%s\t%s\t%s\t%s\n", s.Volume, s.Initiator, s.RemoteAddr, s.Since.Format(time.RFC3339))
	}
	return nil
}

func fenceList(ctx context.Context, a adminCall) error {
	fs, err := a.c.Fences(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, "INITIATOR\tSINCE\tREASON")
	for _, f := range fs {
		fmt.Fprintf(a.out, "%s\t%s\t%s\n", f.Initiator, f.CreatedAt.Format(time.RFC3339), f.Reason)
	}
	return nil
}

func fenceAdd(ctx context.Context, a adminCall) error {
	f, err := a.c.Fence(ctx, a.pos[0], strings.Join(a.pos[1:], " "))
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "fenced %s: its sessions are closed and its logins refused until `fence rm`\n", f.Initiator)
	return nil
}

func fenceRemove(ctx context.Context, a adminCall) error {
	if err := a.c.Unfence(ctx, a.pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "lifted the fence of %s\n", a.pos[0])
	return nil
}

// sizeArg reads a SIZE_MIB argument.
func sizeArg(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("SIZE_MIB %q: give a whole number of MiB, at least 1", s)
	}
	return n, nil
}

// labelArgs reads KEY=VALUE arguments; a key may be given once.
func labelArgs(args []string) (map[string]string, error) {
	labels := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: give KEY=VALUE, e.g. drover.io/vm=web-1", a)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("%q: label %s is given twice", a, k)
		}
		labels[k] = v
	}
	return labels, nil
}

func printVolume(w io.Writer, v wire.Volume) {
	chap := "-"
	if v.CHAP != nil {
		chap = v.CHAP.User
		if v.CHAP.MutualUser != "" {
			chap += " (mutual)"
		}
	}
	inits := strings.Join(v.Initiators, ",")
	if inits == "" {
		inits = "(none)"
	}
	fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", v.Name, v.SizeMiB, v.IQN, v.LUN, inits, chap, v.CreatedAt.Format(time.RFC3339))
}

func printSnapshot(w io.Writer, s wire.Snapshot) {
	fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", s.ID, s.Volume, s.SizeMiB, s.Method, s.CreatedAt.Format(time.RFC3339))
}

func printSnapshotSet(w io.Writer, s wire.SnapshotSet) {
	snaps := make([]string, 0, len(s.Snapshots))
	for _, sn := range s.Snapshots {
		snaps = append(snaps, sn.ID)
	}
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	labels := make([]string, 0, len(keys))
	for _, k := range keys {
		labels = append(labels, k+"="+s.Labels[k])
	}
	orDash := func(l []string) string {
		if len(l) == 0 {
			return "-"
		}
		return strings.Join(l, ",")
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.CreatedAt.Format(time.RFC3339), orDash(snaps), s.Method, s.HoldMS, orDash(labels), orDash(s.Attachments))
}

func scheduleList(ctx context.Context, a adminCall) error {
	ss, err := a.c.ListSchedules(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.out, "ID\tVM\tSCHEDULE\tKEEP\tVOLUMES\tRESTIC\tNEXT RUN\tLAST RUN")
	for _, s := range ss {
		next, last, restic := "never", "-", "-"
		if s.NextRun != nil {
			next = s.NextRun.Format(time.RFC3339)
		}
		if r := s.LastRun; r != nil {
			last = r.At.Local().Format(time.RFC3339) + " " + r.Status
			if r.SetID != "" {
				last += " " + r.SetID
			}
			if r.Error != "" {
				last += ": " + r.Error
			}
		}
		if s.Restic != nil {
			restic = s.Restic.Repository
		}
		fmt.Fprintf(a.out, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.VM, s.Schedule, keepText(s.Keep), strings.Join(s.Volumes, ","), restic, next, last)
	}
	return nil
}

// keepText is a keep as `last=2,daily=7`.
func keepText(k wire.Keep) string {
	var parts []string
	for _, c := range []struct {
		name string
		n    int
	}{{"last", k.Last}, {"daily", k.Daily}, {"weekly", k.Weekly}, {"monthly", k.Monthly}} {
		if c.n > 0 {
			parts = append(parts, c.name+"="+strconv.Itoa(c.n))
		}
	}
	return strings.Join(parts, ",")
}

func scheduleRemove(ctx context.Context, a adminCall) error {
	if err := a.c.DeleteSchedule(ctx, a.pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "deleted schedule %s; the backups it made stay\n", a.pos[0])
	return nil
}
