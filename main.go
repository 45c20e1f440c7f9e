// Command terraform-provider-drover is the Drover Terraform provider plugin.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/provider"
)

// version is set at build time (make build, scripts/version.sh):
// -ldflags "-X main.version=0.1.0".
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.Parse()

	// The framework has no hook for the end of a provider: the host
	// connections live as long as the process and are closed when serving
	// returns.
	hosts := hypervisor.NewPool(hypervisor.Options{})
	err := providerserver.Serve(context.Background(), provider.New(version, hosts), providerserver.ServeOpts{
		Address:         "registry.terraform.io/drover/drover",
		Debug:           debug,
		ProtocolVersion: 6,
	})
	hosts.Close()
	if err != nil {
		log.Fatal(err)
	}
}
