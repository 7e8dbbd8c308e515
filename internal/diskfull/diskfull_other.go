//go:build !unix && !windows

package diskfull

// codes is empty where the errors are not known: nothing is told apart.
var codes []code
