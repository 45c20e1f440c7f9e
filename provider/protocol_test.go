package provider

import (
	"context"
	"fmt"
	"math/big"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// These helpers drive the provider through the plugin protocol, the way
// Terraform does, without the terraform CLI. Configurations are written as
// plain Go values: obj for objects and maps, and string, int, float64 or bool.

type obj = map[string]any

// protocolServer serves the provider in-process over protocol 6.
func protocolServer(t *testing.T, hosts Hypervisors) tfprotov6.ProviderServer {
	t.Helper()
	server, err := providerserver.NewProtocol6WithError(New("test", hosts)())()
	if err != nil {
		t.Fatal(err)
	}
	return server
}

// schemas returns the provider's schema and those of its data sources.
func schemas(t *testing.T, server tfprotov6.ProviderServer) *tfprotov6.GetProviderSchemaResponse {
	t.Helper()
	resp, err := server.GetProviderSchema(context.Background(), &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Diagnostics) > 0 {
		t.Fatalf("GetProviderSchema: %s", diagnosticsString(resp.Diagnostics))
	}
	return resp
}

// dynamicValue encodes v as a value of the given schema's type.
func dynamicValue(t *testing.T, schema *tfprotov6.Schema, v obj) *tfprotov6.DynamicValue {
	t.Helper()
	typ := schema.ValueType()
	dv, err := tfprotov6.NewDynamicValue(typ, toValue(t, typ, v))
	if err != nil {
		t.Fatal(err)
	}
	return &dv
}

// toValue converts a plain Go value to a Terraform value of type typ; absent
// object attributes are null.
func toValue(t *testing.T, typ tftypes.Type, v any) tftypes.Value {
	t.Helper()
	if v == nil {
		return tftypes.NewValue(typ, nil)
	}
	switch typ := typ.(type) {
	case tftypes.Object:
		m := v.(obj)
		for k := range m {
			if _, ok := typ.AttributeTypes[k]; !ok {
				t.Fatalf("the configuration sets %q, which the schema does not have", k)
			}
		}
		vals := make(map[string]tftypes.Value, len(typ.AttributeTypes))
		for k, at := range typ.AttributeTypes {
			vals[k] = toValue(t, at, m[k])
		}
		return tftypes.NewValue(typ, vals)
	case tftypes.Map:
		vals := make(map[string]tftypes.Value)
		for k, e := range v.(obj) {
			vals[k] = toValue(t, typ.ElementType, e)
		}
		return tftypes.NewValue(typ, vals)
	case tftypes.List:
		var vals []tftypes.Value
		switch l := v.(type) {
		case []string:
			for _, e := range l {
				vals = append(vals, toValue(t, typ.ElementType, e))
			}
		case []any:
			for _, e := range l {
				vals = append(vals, toValue(t, typ.ElementType, e))
			}
		default:
			t.Fatalf("toValue: a list needs []string or []any, got %T", v)
		}
		return tftypes.NewValue(typ, vals)
	}
	switch v := v.(type) {
	case int:
		return tftypes.NewValue(typ, big.NewFloat(float64(v)))
	case float64:
		return tftypes.NewValue(typ, big.NewFloat(v))
	default:
		return tftypes.NewValue(typ, v)
	}
}

// fromValue converts a Terraform value to plain Go: obj for objects and
// maps, []any for lists, and string, int64, bool or nil.
func fromValue(t *testing.T, v tftypes.Value) any {
	t.Helper()
	if v.IsNull() {
		return nil
	}
	typ := v.Type()
	switch {
	case typ.Is(tftypes.Object{}), typ.Is(tftypes.Map{}):
		var m map[string]tftypes.Value
		if err := v.As(&m); err != nil {
			t.Fatal(err)
		}
		out := make(obj, len(m))
		for k, e := range m {
			out[k] = fromValue(t, e)
		}
		return out
	case typ.Is(tftypes.List{}):
		var l []tftypes.Value
		if err := v.As(&l); err != nil {
			t.Fatal(err)
		}
		out := make([]any, len(l))
		for i, e := range l {
			out[i] = fromValue(t, e)
		}
		return out
	case typ.Is(tftypes.Number):
		var f big.Float
		if err := v.As(&f); err != nil {
			t.Fatal(err)
		}
		i, _ := f.Int64()
		return i
	case typ.Is(tftypes.String):
		var s string
		if err := v.As(&s); err != nil {
			t.Fatal(err)
		}
		return s
	case typ.Is(tftypes.Bool):
		var b bool
		if err := v.As(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("fromValue: unexpected type %s", typ)
	return nil
}

func diagnosticsString(diags []*tfprotov6.Diagnostic) string {
	s := ""
	for _, d := range diags {
		s += fmt.Sprintf("\n  %s at %v: %s: %s", severity(d), d.Attribute, d.Summary, d.Detail)
	}
	return s
}

func severity(d *tfprotov6.Diagnostic) string {
	if d.Severity == tfprotov6.DiagnosticSeverityWarning {
		return "warning"
	}
	return "error"
}
