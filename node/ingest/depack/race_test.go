//go:build race

package depack

const raceEnabled = true
