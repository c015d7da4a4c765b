"""The floor's entry point (build/build.sh --floor): does nothing, so the frozen program's
start-up is all that is measured."""
