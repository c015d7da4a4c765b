"""Bring libcni 1.1.x result types (pkg/types) to the behaviour of libcni >= 1.2 (v1.3.0).

Usage: patch_libcni.py PKG_TYPES_DIR   (edits a copy in place; fails if the source differs)
"""

import sys
from pathlib import Path


def edit(path: Path, *pairs: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in pairs:
        if old not in text:
            sys.exit(f"{path}: expected text not found:\n{old}")
        text = text.replace(old, new)
    path.write_text(text)


root = Path(sys.argv[1])

# types.Route gains the 1.1 fields (mtu/advmss/priority are int,omitempty; table/scope *int).
edit(
    root / "types.go",
    ("type Route struct {\n\tDst net.IPNet\n\tGW  net.IP\n}",
     "type Route struct {\n\tDst      net.IPNet\n\tGW       net.IP\n\tMTU      int\n"
     "\tAdvMSS   int\n\tPriority int\n\tTable    *int\n\tScope    *int\n}"),
    ("\treturn &Route{\n\t\tDst: r.Dst,\n\t\tGW:  r.GW,\n\t}\n}",
     "\troute := &Route{Dst: r.Dst, GW: r.GW, MTU: r.MTU, AdvMSS: r.AdvMSS, Priority: r.Priority}\n"
     "\tif r.Table != nil {\n\t\tt := *r.Table\n\t\troute.Table = &t\n\t}\n"
     "\tif r.Scope != nil {\n\t\tsc := *r.Scope\n\t\troute.Scope = &sc\n\t}\n\treturn route\n}"),
    ("type route struct {\n\tDst IPNet  `json:\"dst\"`\n\tGW  net.IP `json:\"gw,omitempty\"`\n}",
     "type route struct {\n\tDst      IPNet  `json:\"dst\"`\n"
     "\tGW       net.IP `json:\"gw,omitempty\"`\n"
     "\tMTU      int    `json:\"mtu,omitempty\"`\n\tAdvMSS   int    `json:\"advmss,omitempty\"`\n"
     "\tPriority int    `json:\"priority,omitempty\"`\n"
     "\tTable    *int   `json:\"table,omitempty\"`\n"
     "\tScope    *int   `json:\"scope,omitempty\"`\n}"),
    ("\tr.Dst = net.IPNet(rt.Dst)\n\tr.GW = rt.GW\n\treturn nil",
     "\tr.Dst = net.IPNet(rt.Dst)\n\tr.GW = rt.GW\n\tr.MTU = rt.MTU\n\tr.AdvMSS = rt.AdvMSS\n"
     "\tr.Priority = rt.Priority\n\tr.Table = rt.Table\n\tr.Scope = rt.Scope\n\treturn nil"),
    ("\trt := route{\n\t\tDst: IPNet(r.Dst),\n\t\tGW:  r.GW,\n\t}",
     "\trt := route{Dst: IPNet(r.Dst), GW: r.GW, MTU: r.MTU, AdvMSS: r.AdvMSS,"
     " Priority: r.Priority, Table: r.Table, Scope: r.Scope}"),
)
with (root / "types.go").open("a") as f:
    f.write("\nfunc (d *DNS) IsEmpty() bool {\n\treturn len(d.Nameservers) == 0 && d.Domain == \"\""
            " && len(d.Search) == 0 && len(d.Options) == 0\n}\n")

# types100 serves 1.0.0 and 1.1.0 with one type; 1.x is marshalled through a map.
edit(
    root / "100" / "types.go",
    ('const ImplementedSpecVersion string = "1.0.0"',
     'const ImplementedSpecVersion string = "1.1.0"'),
    ("var supportedVersions = []string{ImplementedSpecVersion}",
     'var supportedVersions = []string{"1.0.0", "1.1.0"}'),
    ('\tconvert.RegisterConverter("1.0.0", []string{"0.1.0", "0.2.0"}, convertTo02x)\n',
     '\tconvert.RegisterConverter("1.0.0", []string{"0.1.0", "0.2.0"}, convertTo02x)\n'
     '\tconvert.RegisterConverter("1.1.0", []string{"0.3.0", "0.3.1", "0.4.0"}, convertTo04x)\n'
     '\tconvert.RegisterConverter("1.1.0", []string{"0.1.0", "0.2.0"}, convertTo02x)\n'
     '\tconvert.RegisterConverter("1.1.0", []string{"1.0.0"}, convertFrom100)\n'
     '\tconvert.RegisterConverter("1.0.0", []string{"1.1.0"}, convertFrom100)\n'),
    ("result100, err := convertFrom04x(result040, ImplementedSpecVersion)",
     "result100, err := convertFrom04x(result040, toVersion)"),
    ('type Interface struct {\n\tName    string `json:"name"`\n'
     '\tMac     string `json:"mac,omitempty"`\n'
     '\tSandbox string `json:"sandbox,omitempty"`\n}',
     'type Interface struct {\n\tName       string `json:"name"`\n'
     '\tMac        string `json:"mac,omitempty"`\n\tMtu        int    `json:"mtu,omitempty"`\n'
     '\tSandbox    string `json:"sandbox,omitempty"`\n'
     '\tSocketPath string `json:"socketPath,omitempty"`\n'
     '\tPciID      string `json:"pciID,omitempty"`\n}'),
    ("func convertFrom02x(",
     "func (r *Result) MarshalJSON() ([]byte, error) {\n\ttype fixObjType = Result\n"
     "\tbytes, err := json.Marshal(fixObjType(*r))\n\tif err != nil {\n\t\treturn nil, err\n\t}\n"
     "\tfixupObj := make(map[string]interface{})\n"
     "\tif err := json.Unmarshal(bytes, &fixupObj); err != nil {\n\t\treturn nil, err\n\t}\n"
     "\tif r.DNS.IsEmpty() {\n\t\tdelete(fixupObj, \"dns\")\n\t}\n"
     "\treturn json.Marshal(fixupObj)\n}\n\n"
     "func convertFrom100(from types.Result, toVersion string) (types.Result, error) {\n"
     "\tf := from.(*Result)\n\treturn &Result{CNIVersion: toVersion, Interfaces: f.Interfaces,"
     " IPs: f.IPs, Routes: f.Routes, DNS: f.DNS}, nil\n}\n\nfunc convertFrom02x("),
)
