#!/usr/bin/env bash
# The end of `make demo`: where things run and how to look at them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/examples/quickstart"
echo
echo "== The Drover lab =="
terraform output -raw summary
echo
echo
echo "== VMs =="
terraform output -raw vms
echo
echo
echo "The console logs are relative to $root; virsh console attaches to a running"
echo "VM's serial console (leave it with Ctrl+]). Each guest prints a record line per"
echo "second: 'drover-guest: record seq=N ...' is a write to its iSCSI disk."
echo
echo "Look around:"
echo "  virsh -c qemu+tcp://127.0.0.2/system list --all    # host alpha"
echo "  virsh -c qemu+tcp://127.0.0.3/system list --all    # host beta"
echo "  export TF_CLI_CONFIG_FILE=$root/.lab/terraformrc"
echo "  terraform -chdir=examples/quickstart output        # the example's outputs"
echo "  make demo-down                                      # destroy the VMs and volumes"
echo "  make lab-down                                       # stop the lab"
