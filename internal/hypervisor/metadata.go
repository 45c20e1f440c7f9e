package hypervisor

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// MetadataNamespace is the XML namespace of Drover's facts in a domain's
// <metadata>; MetadataPrefix is the prefix libvirt gives it.
const (
	MetadataNamespace = "https://drover.dev/xmlns/vm/1"
	MetadataPrefix    = "drover"
)

// managedBy marks a domain Drover manages.
const managedBy = "drover"

// metadataXML is Drover's element in a domain's <metadata>:
//
//	<vm xmlns="https://drover.dev/xmlns/vm/1">
//	  <managed-by>drover</managed-by>
//	  <placement host="alpha" spread-group="web"><preferred-host>alpha</preferred-host></placement>
//	  <max-memory-mib>2048</max-memory-mib><max-vcpus>4</max-vcpus>
//	  <allow-restart>false</allow-restart>
//	  <cloud-init volume="web-seed"/>
//	  <disk target="vda" volume="web-root"/>
//	</vm>
//
// Children carry no namespace of their own: they inherit the element's, so
// the same struct reads what libvirt gives back, whatever prefix it uses.
type metadataXML struct {
	XMLName      xml.Name      `xml:"https://drover.dev/xmlns/vm/1 vm"`
	ManagedBy    string        `xml:"managed-by"`
	Placement    *placementXML `xml:"placement"`
	MaxMemoryMiB int64         `xml:"max-memory-mib,omitempty"`
	MaxVCPUs     int           `xml:"max-vcpus,omitempty"`
	AllowRestart bool          `xml:"allow-restart"`
	CloudInit    *volumeRef    `xml:"cloud-init"`
	Disks        []volumeRef   `xml:"disk"`
}

type placementXML struct {
	Host        string   `xml:"host,attr,omitempty"`
	SpreadGroup string   `xml:"spread-group,attr,omitempty"`
	Preferred   []string `xml:"preferred-host"`
}

type volumeRef struct {
	Target string `xml:"target,attr,omitempty"`
	Volume string `xml:"volume,attr"`
}

// metadata returns Drover's facts about vm.
func (vm VM) metadata() metadataXML {
	m := metadataXML{
		ManagedBy:    managedBy,
		MaxMemoryMiB: vm.maxMemory(),
		MaxVCPUs:     vm.maxVCPUs(),
		AllowRestart: vm.AllowRestart,
	}
	p := vm.Placement
	if p.Host != "" || p.SpreadGroup != "" || len(p.PreferredHosts) > 0 {
		m.Placement = &placementXML{Host: p.Host, SpreadGroup: p.SpreadGroup, Preferred: p.PreferredHosts}
	}
	if vm.CloudInit != nil {
		m.CloudInit = &volumeRef{Volume: vm.CloudInit.Volume}
	}
	for i, target := range vm.DiskTargets() {
		m.Disks = append(m.Disks, volumeRef{Target: target, Volume: vm.Disks[i].Volume})
	}
	return m
}

func (m metadataXML) marshal() (string, error) {
	b, err := xml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	return string(b), nil
}

// parseMetadata finds Drover's element among the domain's metadata; a domain
// without one gives the zero value.
func parseMetadata(md *libvirtxml.DomainMetadata) (metadataXML, error) {
	var m metadataXML
	if md == nil || strings.TrimSpace(md.XML) == "" {
		return m, nil
	}
	dec := xml.NewDecoder(strings.NewReader(md.XML))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return m, fmt.Errorf("metadata: %w", err)
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if start.Name.Space != MetadataNamespace || start.Name.Local != "vm" {
			if err := dec.Skip(); err != nil {
				return m, fmt.Errorf("metadata: %w", err)
			}
			continue
		}
		if err := dec.DecodeElement(&m, &start); err != nil {
			return m, fmt.Errorf("drover metadata: %w", err)
		}
		return m, nil
	}
}
