// Command controlplane is the real Kubernetes control plane the test cluster
// runs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kubectl, linked once into one binary (a multicall binary, like the old
// hyperkube) so that a cold build compiles the shared Kubernetes packages
// once instead of four times.
//
// Usage: controlplane <etcd|apiserver|controller-manager|scheduler|kubectl> [flags]
// or a symlink named after the subcommand (kubectl -> controlplane).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // CronJob time zones, as the real binaries do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var commands = map[string]func() *cobra.Command{
	"apiserver":          apiserver.NewAPIServerCommand,
	"controller-manager": controllermanager.NewControllerManagerCommand,
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: controlplane etcd|apiserver|controller-manager|scheduler|kubectl [flags]")
	os.Exit(2)
}

func main() {
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "kube-")
	args := os.Args
	if name == "controlplane" {
		if len(os.Args) < 2 {
			usage()
		}
		name = os.Args[1]
		args = append([]string{name}, os.Args[2:]...)
	}
	os.Args = args
	switch name {
	case "etcd":
		etcdmain.Main(args)
	case "kubectl", "ctl":
		logs.GlogSetter(kubectl.GetLogVerbosity(args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		newCommand, ok := commands[name]
		if !ok {
			usage()
		}
		os.Exit(cli.Run(newCommand()))
	}
}
