// Package provider is the Terraform glue of Drover: the provider's schema and
// configuration, its resources and data sources. Each operation converts the
// Terraform model into a plain spec, makes one call into internal/cluster
// (which surveys, decides, moves and backs up), reads the result back and
// sets the state from it; no cluster logic lives here.
package provider
