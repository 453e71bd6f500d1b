// step-ca for the test bed and the demo, built from Debian's Go packages
// (golang-github-smallstep-certificates-dev ships the libraries, not the command).
// Built by `make step-ca` into build/bin/step-ca; see scripts/build-step-ca.
package main

import (
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
	"go.step.sm/cli-utils/command"
	"go.step.sm/cli-utils/step"
)

func main() {
	step.Set("Smallstep CA", "certagent-testbed", "debian")
	app := cli.NewApp()
	app.Name = "step-ca"
	app.HelpName = "step-ca"
	app.Usage = "an online certificate authority (test bed build)"
	app.Version = step.Version()
	app.Action = commands.AppCommand.Action
	app.Flags = commands.AppCommand.Flags
	app.Commands = command.Retrieve()
	app.HideHelp = false
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "step-ca:", err)
		os.Exit(1)
	}
}
