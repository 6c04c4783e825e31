package tasks

// DefaultQueue is the queue producers and workers use unless told otherwise.
const DefaultQueue = "activations"
