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

// admin runs `volume`, `snapshot`, `snapshot-set` and `session` subcommands
// against the API.
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
	force := fs.Bool("force", false, "volume rm: delete even while initiators are logged in")
	format := fs.String("format", "", "volume upload: raw or qcow2 (default: detect)")
	var initiators []string
	fs.Func("initiator", "volume create: an initiator IQN allowed to log in (repeat for more)", func(s string) error {
		initiators = append(initiators, s)
		return nil
	})
	labels := map[string]string{}
	fs.Func("label", "snapshot-set ls: only sets with this label, KEY=VALUE (repeat: all must match)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: give KEY=VALUE, e.g. --label drover.io/vm=web-1", s)
		}
		if old, dup := labels[k]; dup && old != v {
			return fmt.Errorf("%q: label %s is already given as %q", s, k, old)
		}
		labels[k] = v
		return nil
	})
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
	c, err := storage.New(*endpoint, token)
	if err != nil {
		return err
	}
	want := func(n int, names string) error {
		if len(pos) != n {
			return fmt.Errorf("%s %s takes %s, got %d argument(s)", noun, verb, names, len(pos))
		}
		return nil
	}
	sizeArg := func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("SIZE_MIB %q: give a whole number of MiB, at least 1", s)
		}
		return n, nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()

	switch noun + " " + verb {
	case "volume ls":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		vols, err := c.ListVolumes(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "NAME\tSIZE_MIB\tIQN\tLUN\tINITIATORS\tCHAP\tCREATED")
		for _, v := range vols {
			printVolume(tw, v)
		}
	case "volume create":
		if err := want(2, "NAME SIZE_MIB"); err != nil {
			return err
		}
		size, err := sizeArg(pos[1])
		if err != nil {
			return err
		}
		v, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: pos[0], SizeMiB: size, Initiators: initiators})
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "NAME\tSIZE_MIB\tIQN\tLUN\tINITIATORS\tCHAP\tCREATED")
		printVolume(tw, v)
	case "volume grow":
		if err := want(2, "NAME SIZE_MIB"); err != nil {
			return err
		}
		size, err := sizeArg(pos[1])
		if err != nil {
			return err
		}
		v, err := c.GrowVolume(ctx, pos[0], size)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s is now %d MiB\n", v.Name, v.SizeMiB)
	case "volume upload":
		if err := want(2, "NAME IMAGE_FILE"); err != nil {
			return err
		}
		f, err := os.Open(pos[1])
		if err != nil {
			return err
		}
		defer f.Close()
		if err := c.UploadVolume(ctx, pos[0], f, *format); err != nil {
			return err
		}
		fmt.Fprintf(tw, "uploaded %s into %s\n", pos[1], pos[0])
	case "volume rm":
		if err := want(1, "NAME"); err != nil {
			return err
		}
		if err := c.DeleteVolume(ctx, pos[0], *force); err != nil {
			return err
		}
		fmt.Fprintf(tw, "deleted volume %s\n", pos[0])
	case "snapshot ls":
		if err := want(1, "VOLUME"); err != nil {
			return err
		}
		snaps, err := c.ListSnapshots(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tVOLUME\tSIZE_MIB\tMETHOD\tCREATED")
		for _, s := range snaps {
			printSnapshot(tw, s)
		}
	case "snapshot create":
		if err := want(1, "VOLUME"); err != nil {
			return err
		}
		s, err := c.CreateSnapshot(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tVOLUME\tSIZE_MIB\tMETHOD\tCREATED")
		printSnapshot(tw, s)
	case "snapshot rm":
		if err := want(1, "ID"); err != nil {
			return err
		}
		if err := c.DeleteSnapshot(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(tw, "deleted snapshot %s\n", pos[0])
	case "snapshot-set ls":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		sets, err := c.ListSnapshotSets(ctx, labels)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tCREATED\tSNAPSHOTS\tMETHOD\tHOLD_MS\tLABELS\tATTACHMENTS")
		for _, s := range sets {
			printSnapshotSet(tw, s)
		}
	case "snapshot-set label":
		if len(pos) < 2 {
			return fmt.Errorf("snapshot-set label takes ID KEY=VALUE... (the set's new labels, all of them), got %d argument(s)", len(pos))
		}
		labels, err := labelArgs(pos[1:])
		if err != nil {
			return err
		}
		set, err := c.SetSnapshotSetLabels(ctx, pos[0], labels)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tCREATED\tSNAPSHOTS\tMETHOD\tHOLD_MS\tLABELS\tATTACHMENTS")
		printSnapshotSet(tw, set)
	case "snapshot-set rm":
		if err := want(1, "ID"); err != nil {
			return err
		}
		if err := c.DeleteSnapshotSet(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(tw, "deleted snapshot set %s and its snapshots\n", pos[0])
	case "session ls":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		ss, err := c.Sessions(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "VOLUME\tINITIATOR\tREMOTE\tSINCE")
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Volume, s.Initiator, s.RemoteAddr, s.Since.Format(time.RFC3339))
		}
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", noun+" "+verb, usage)
		return errUsage
	}
	return nil
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
