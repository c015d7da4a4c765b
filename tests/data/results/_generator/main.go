package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types/create"
	_ "github.com/containernetworking/cni/pkg/types/020"
	_ "github.com/containernetworking/cni/pkg/types/040"
	_ "github.com/containernetworking/cni/pkg/types/100"
)

// usage: emu <input.json> <inputVersion> <outVersion>: prints the result as libcni does
func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	r, err := create.Create(os.Args[2], data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		os.Exit(2)
	}
	out, err := r.GetAsVersion(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "convert:", err)
		os.Exit(3)
	}
	if err := out.Print(); err != nil {
		panic(err)
	}
}
