package provider

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// libvirtSchemeRegexp matches the scheme of a libvirt URI: a driver, and
// optionally a transport after a plus (qemu, qemu+ssh, test, ...).
var libvirtSchemeRegexp = regexp.MustCompile(`^[a-z][a-z0-9]*(\+[a-z0-9]+)?$`)

// libvirtURI refuses strings that libvirt could not take as a connection URI.
type libvirtURI struct{}

func (libvirtURI) Description(context.Context) string {
	return "must be a libvirt URI such as qemu+ssh://root@alpha/system"
}

func (v libvirtURI) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (v libvirtURI) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if problem := libvirtURIProblem(s); problem != "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid libvirt URI",
			fmt.Sprintf("%q is not a libvirt URI: %s. Write one such as qemu+ssh://root@alpha/system or qemu:///system.", s, problem))
	}
}

func libvirtURIProblem(s string) string {
	if s == "" {
		return "it is empty"
	}
	u, err := url.Parse(s)
	if err != nil {
		if uerr, ok := err.(*url.Error); ok {
			err = uerr.Err
		}
		return err.Error()
	}
	switch {
	case u.Scheme == "":
		return "it has no scheme such as qemu:// or qemu+ssh://"
	case !libvirtSchemeRegexp.MatchString(u.Scheme):
		return fmt.Sprintf("scheme %q is not of the form driver or driver+transport", u.Scheme)
	case u.Opaque != "":
		return "the scheme must be followed by //"
	}
	return ""
}

// httpURL refuses strings that are not http or https URLs with a host.
type httpURL struct{}

func (httpURL) Description(context.Context) string {
	return "must be an http or https URL such as https://storage.lan:3261"
}

func (v httpURL) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v httpURL) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid endpoint",
			fmt.Sprintf("%q is not an http or https URL with a host, such as https://storage.lan:3261.", s))
	}
}

// hostPort refuses strings that are not host:port.
type hostPort struct{}

func (hostPort) Description(context.Context) string {
	return "must be host:port, such as storage.lan:3260"
}

func (v hostPort) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v hostPort) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid portal",
			fmt.Sprintf("%q is not host:port, such as storage.lan:3260.", s))
	}
}

// migrationAddressRegexp matches a host name or an IPv4 address.
var migrationAddressRegexp = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// migrationAddress refuses strings that are not a host name or an IP
// address: libvirt takes the address without a scheme or a port.
type migrationAddress struct{}

func (migrationAddress) Description(context.Context) string {
	return "must be a host name or an IP address without a port, such as 10.0.0.2"
}

func (v migrationAddress) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v migrationAddress) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if net.ParseIP(s) == nil && !migrationAddressRegexp.MatchString(s) {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid migration address",
			fmt.Sprintf("%q is not a host name or an IP address; write one without a scheme or a port, such as 10.0.0.2.", s))
	}
}

// hostBlocks refuses a provider block without a host block, and two host
// blocks of one name.
type hostBlocks struct{}

func (hostBlocks) Description(context.Context) string {
	return "at least one host block, each with a name of its own"
}

func (v hostBlocks) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v hostBlocks) ValidateList(_ context.Context, req validator.ListRequest, resp *validator.ListResponse) {
	if req.ConfigValue.IsUnknown() {
		return
	}
	elems := req.ConfigValue.Elements()
	if len(elems) == 0 {
		resp.Diagnostics.AddAttributeError(req.Path, "No host",
			`The provider block needs at least one host block, such as host { name = "alpha" uri = "qemu+ssh://root@alpha/system" }.`)
		return
	}
	first := map[string]int{} // host name → index of its first block
	for i, e := range elems {
		o, ok := e.(types.Object)
		if !ok || o.IsNull() || o.IsUnknown() {
			continue
		}
		name, ok := o.Attributes()["name"].(types.String)
		if !ok || name.IsNull() || name.IsUnknown() {
			continue
		}
		if j, dup := first[name.ValueString()]; dup {
			resp.Diagnostics.AddAttributeError(req.Path.AtListIndex(i).AtName("name"), "Duplicate host name",
				fmt.Sprintf("Host blocks %d and %d are both named %q; each host block needs a name of its own.",
					j+1, i+1, name.ValueString()))
			continue
		}
		first[name.ValueString()] = i
	}
}
