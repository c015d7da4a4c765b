// libcni-client: a minimal cnitool-like runtime for the test suites.
//
// It drives CNI plugins through the real libcni (Debian's golang-github-appc-cni-dev), so the
// plugins see exactly what containerd, CRI-O or podman's CNI backend would send them: injected
// name/cniVersion, runtimeConfig built from declared capabilities, prevResult chaining, the
// result cache, DEL in reverse order.
//
// Usage:
//
//	libcni-client add|check|del NETNAME NETNS_PATH
//	libcni-client version PLUGIN_TYPE
//
// Environment:
//
//	NETCONFPATH      directory holding *.conflist / *.conf files (required)
//	CNI_PATH         plugin search path, ':'-separated (required)
//	CNI_CACHE_DIR    libcni result cache (required; never defaults to /var/lib/cni)
//	CNI_IFNAME       interface name in the container (default eth0)
//	CNI_CONTAINERID  container ID (default: "cni-" + first 16 hex chars of sha512(NETNS_PATH))
//	CAP_ARGS         JSON object of capability args, e.g. {"portMappings":[...]}; as with a
//	                 real runtime, pass the same value to del and check as to add
//	CNI_ARGS         "K1=V1;K2=V2"
//
// On success, add prints the result JSON on stdout. On error, the error goes to stderr and the
// exit status is 1 (2 for usage errors).
//
// Build (GOPATH mode, against the Debian package):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o libcni-client ./bats/libcni-client
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: libcni-client add|check|del NETNAME NETNS_PATH")
	fmt.Fprintln(os.Stderr, "       libcni-client version PLUGIN_TYPE")
	os.Exit(2)
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "libcni-client: "+format+"\n", a...)
	os.Exit(1)
}

func requireEnv(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fail("environment variable %s is required", name)
	}
	return v
}

func parseCNIArgs(s string) [][2]string {
	var out [][2]string
	if s == "" {
		return out
	}
	for _, pair := range strings.Split(s, ";") {
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 {
			fail("invalid CNI_ARGS pair %q", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	cmd := os.Args[1]

	cniPath := filepath.SplitList(requireEnv("CNI_PATH"))
	cacheDir := requireEnv("CNI_CACHE_DIR")
	cninet := libcni.NewCNIConfigWithCacheDir(cniPath, cacheDir, nil)
	ctx := context.Background()

	if cmd == "version" {
		info, err := cninet.GetVersionInfo(ctx, os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		out, _ := json.Marshal(map[string]interface{}{
			"supportedVersions": info.SupportedVersions(),
		})
		fmt.Println(string(out))
		return
	}

	if len(os.Args) != 4 {
		usage()
	}
	netName, netns := os.Args[2], os.Args[3]

	netconf, err := libcni.LoadConfList(requireEnv("NETCONFPATH"), netName)
	if err != nil {
		fail("loading network %q: %v", netName, err)
	}

	capArgs := map[string]interface{}{}
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &capArgs); err != nil {
			fail("parsing CAP_ARGS: %v", err)
		}
	}

	ifName := os.Getenv("CNI_IFNAME")
	if ifName == "" {
		ifName = "eth0"
	}
	containerID := os.Getenv("CNI_CONTAINERID")
	if containerID == "" {
		sum := sha512.Sum512([]byte(netns))
		containerID = fmt.Sprintf("cni-%x", sum[:8])
	}

	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           parseCNIArgs(os.Getenv("CNI_ARGS")),
		CapabilityArgs: capArgs,
	}

	switch cmd {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			fail("%v", err)
		}
		if result != nil {
			if err := result.Print(); err != nil {
				fail("printing result: %v", err)
			}
			fmt.Println()
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			fail("%v", err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			fail("%v", err)
		}
	default:
		usage()
	}
}
