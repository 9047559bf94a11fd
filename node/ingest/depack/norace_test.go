//go:build !race

package depack

const raceEnabled = false
