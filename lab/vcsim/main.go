// vcsim for the DSM lab: govmomi's vCenter simulator (Debian's govmomi 0.24) with an inventory
// sized by flags, a real user and password, TLS with a generated certificate, and hosts that look
// like Dell servers (service tags as serial numbers), so host-to-server linking can be tested.
//
// It listens on 127.0.0.1 only, prints one line "VCSIM_URL=https://user:pass@127.0.0.1:port/sdk"
// on stdout when ready, and runs until SIGINT/SIGTERM or until stdin is closed.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim lab/vcsim/main.go
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	mrand "math/rand"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Dell service tags: 7 characters from digits and upper-case letters (Dell skips vowels-like
// confusables in practice; this alphabet keeps them realistic without I/O/U).
const tagAlphabet = "0123456789ABCDEFGHJKLMNPQRSTVWXYZ"

var dellModels = []string{"PowerEdge R750", "PowerEdge R650", "PowerEdge R740xd", "PowerEdge R640", "PowerEdge MX750c"}

func main() {
	dc := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	vms := flag.Int("vm-per-host", 0, "virtual machines per host")
	seed := flag.Int64("seed", 1, "seed for the generated service tags")
	disconnected := flag.Int("disconnected", 0, "mark this many hosts (the last ones by name) disconnected")
	user := flag.String("user", "administrator@vsphere.local", "user name vcsim accepts")
	password := flag.String("password", "", "password vcsim accepts (required)")
	certOut := flag.String("cert-out", "", "write the server certificate (PEM) to this file")
	cn := flag.String("cn", "vcsim.dsm-lab.local", "common name of the generated certificate")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host (apiType HostAgent) instead of vCenter")
	stdinEOF := flag.Bool("exit-on-stdin-eof", false, "also stop when stdin is closed (the parent went away)")
	serviceTags := flag.String("service-tags", "", "comma-separated service tags for the first hosts (by name), e.g. OME's; the rest are generated")
	flag.Parse()

	if *password == "" {
		log.Fatal("-password is required: vcsim without a user accepts any login and hides credential bugs")
	}

	var m *simulator.Model
	if *esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
		m.Datacenter = *dc
		m.Cluster = *clusters
		m.ClusterHost = *hosts
		m.Host = *standalone
	}
	m.Machine = 0 // VMs are created per host below; the model only knows "per resource pool"
	m.Portgroup = 0
	m.Autostart = true

	if err := m.Create(); err != nil {
		log.Fatalf("create model: %v", err)
	}
	defer m.Remove()

	var given []string
	for _, t := range strings.Split(*serviceTags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			given = append(given, t)
		}
	}
	tags := dellHardware(*seed, *disconnected, given)

	cert, err := selfSignedCert(*cn)
	if err != nil {
		log.Fatalf("certificate: %v", err)
	}
	if *certOut != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		if err := ioutil.WriteFile(*certOut, pemBytes, 0o644); err != nil {
			log.Fatalf("write certificate: %v", err)
		}
	}

	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *password)}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s := m.Service.NewServer()
	defer s.Close()

	if *vms > 0 {
		if err := createVMs(s.URL, *vms); err != nil {
			log.Fatalf("create VMs: %v", err)
		}
	}

	log.Printf("%d hosts with service tags", len(tags))
	fmt.Printf("VCSIM_URL=%s\n", s.URL.String())
	os.Stdout.Sync()

	wait(*stdinEOF)
}

// dellHardware gives every host a deterministic Dell identity. Every fourth host has no
// hardware.systemInfo.serialNumber (older ESXi builds leave it empty) and only the ServiceTag in
// otherIdentifyingInfo, so the client's fallback is exercised. The first hosts take the `given`
// tags (so they link to servers another lab part reports), the rest are generated.
func dellHardware(seed int64, disconnected int, given []string) []string {
	var hostList []*simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		if h, ok := e.(*simulator.HostSystem); ok {
			hostList = append(hostList, h)
		}
	}
	sort.Slice(hostList, func(i, j int) bool { return hostList[i].Name < hostList[j].Name })

	rng := mrand.New(mrand.NewSource(seed))
	seen := map[string]bool{}
	for _, t := range given {
		seen[t] = true
	}
	var tags []string
	for i, h := range hostList {
		tag := ""
		if i < len(given) {
			tag = given[i]
		}
		for tag == "" || (i >= len(given) && seen[tag]) {
			b := make([]byte, 7)
			for k := range b {
				b[k] = tagAlphabet[rng.Intn(len(tagAlphabet))]
			}
			tag = string(b)
		}
		seen[tag] = true
		tags = append(tags, tag)
		model := dellModels[i%len(dellModels)]

		// The template's slices are shared by every host (shallow copy in NewHostSystem): build new ones.
		ident := []types.HostSystemIdentificationInfo{
			identification("AssetTag", "Asset Tag", "Asset tag of the system", " No Asset Tag"),
			identification("ServiceTag", "Service tag", "Service tag of the system", tag),
			identification("EnclosureSerialNumberTag", "Enclosure serial number tag",
				"Enclosure serial number tag of the system", tag),
		}
		serial := tag
		if i%4 == 3 {
			serial = ""
		}

		info := *h.Hardware
		info.SystemInfo = types.HostSystemInfo{
			Vendor:               "Dell Inc.",
			Model:                model,
			Uuid:                 h.Hardware.SystemInfo.Uuid,
			OtherIdentifyingInfo: ident,
			SerialNumber:         serial,
		}
		h.Hardware = &info

		summary := *h.Summary.Hardware
		summary.Vendor = "Dell Inc."
		summary.Model = model
		summary.OtherIdentifyingInfo = ident
		h.Summary.Hardware = &summary

		if i >= len(hostList)-disconnected {
			h.Runtime.ConnectionState = types.HostSystemConnectionStateDisconnected
		}
	}
	return tags
}

func identification(key, label, summary, value string) types.HostSystemIdentificationInfo {
	return types.HostSystemIdentificationInfo{
		IdentifierValue: value,
		IdentifierType: &types.ElementDescription{
			Description: types.Description{Label: label, Summary: summary},
			Key:         key,
		},
	}
}

// createVMs places n VMs on every host, through the API like a real inventory would be built.
func createVMs(u *url.URL, n int) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer c.Logout(ctx)

	dcs, err := findAll(ctx, c, c.ServiceContent.RootFolder, "Datacenter")
	if err != nil {
		return err
	}
	for _, dcRef := range dcs {
		dc := object.NewDatacenter(c.Client, dcRef.Self)
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		hostRefs, err := findAll(ctx, c, dcRef.Self, "HostSystem")
		if err != nil {
			return err
		}
		for _, hr := range hostRefs {
			host := object.NewHostSystem(c.Client, hr.Self)
			pool, err := host.ResourcePool(ctx)
			if err != nil {
				return err
			}
			for i := 0; i < n; i++ {
				spec := types.VirtualMachineConfigSpec{
					Name:    fmt.Sprintf("%s_VM%d", hr.Name, i),
					GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
					Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
				}
				task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
				if err != nil {
					return err
				}
				if _, err := task.WaitForResult(ctx, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func findAll(ctx context.Context, c *govmomi.Client, root types.ManagedObjectReference, kind string) ([]mo.ManagedEntity, error) {
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, root, []string{kind}, true)
	if err != nil {
		return nil, err
	}
	defer v.Destroy(ctx)
	var out []mo.ManagedEntity
	err = v.Retrieve(ctx, []string{kind}, []string{"name"}, &out)
	return out, err
}

// selfSignedCert makes a CA-flagged self-signed certificate for 127.0.0.1 and localhost, so a
// client can trust it through a CA bundle file, as an operator would with a private vCenter CA.
func selfSignedCert(cn string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"DSM Lab"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{cn, "localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// wait returns on SIGINT/SIGTERM or, if asked, when stdin reaches EOF (the parent went away).
func wait(stdinEOF bool) {
	done := make(chan struct{}, 2)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; done <- struct{}{} }()
	go func() {
		if !stdinEOF {
			return
		}
		r := bufio.NewReader(os.Stdin)
		for {
			if _, err := r.ReadByte(); err != nil {
				done <- struct{}{}
				return
			}
		}
	}()
	<-done
}
