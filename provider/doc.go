// Package provider is the Terraform glue of Drover: the provider's schema and
// configuration, its resources and data sources. It translates Terraform values
// into the plain types of the internal packages and back, and holds no cluster
// logic of its own.
package provider
