// Command drover-lab starts and stops Drover's local lab (see package lab).
//
//	drover-lab [-dir .lab] up|down|status
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/drover/terraform-provider-drover/internal/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "drover-lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("drover-lab", flag.ContinueOnError)
	dir := fs.String("dir", ".lab", "the lab's state folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stdout, "lab: "+format+"\n", a...) }
	l, err := lab.New(*dir, logf)
	if err != nil {
		return err
	}
	switch fs.Arg(0) {
	case "up":
		info, err := l.Up(ctx)
		if err != nil {
			return err
		}
		logf("running: alpha %s, beta %s, drover-target %s (portal %s)", info.AlphaURI, info.BetaURI, info.StorageEndpoint, info.StoragePortal)
		logf("over ssh: alpha %s, beta %s", info.AlphaSSHURI, info.BetaSSHURI)
		logf("over TLS: drover-target %s (portal %s, CA %s)", info.TLSStorageEndpoint, info.TLSStoragePortal, info.StorageCAFile)
		logf("terraform: export TF_CLI_CONFIG_FILE=%s/terraformrc; variables in %s/lab.tfvars (then ssh.tfvars, tls.tfvars for ssh and TLS)", l.Dir, l.Dir)
		return nil
	case "down":
		return l.Down(ctx)
	case "status":
		st := l.Status()
		names := make([]string, 0, len(st))
		for n := range st {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			state := "stopped"
			if st[n] {
				state = "running"
			}
			fmt.Fprintf(stdout, "%-16s %s\n", n, state)
		}
		return nil
	default:
		return fmt.Errorf("usage: drover-lab [-dir DIR] up|down|status")
	}
}
