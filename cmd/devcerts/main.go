// Command devcerts writes the development PKI: a CA, a mesh certificate per service (SPIFFE ID
// spiffe://campaignmesh.local/<service>) and the gateway's edge certificate for localhost.
// It only creates what is missing, so re-running it is safe; delete the folder to start over.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
)

func main() {
	dir := flag.String("dir", ".state/certs", "folder to write the PEM files into")
	services := flag.String("services", "auth,gateway", "comma-separated mesh service names")
	flag.Parse()
	created, err := mtls.DevPKI(*dir, strings.Split(*services, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
	if len(created) == 0 {
		fmt.Printf("devcerts: certificates in %s are up to date\n", *dir)
		return
	}
	fmt.Printf("devcerts: wrote %d files to %s\n", len(created), *dir)
}
