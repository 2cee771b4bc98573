"""Transfer probes of features (docs/method.md §4): linear, ridge and kNN.

`methods` holds the registry and the shared options, `arrays` the public array functions
(`linear_probe`, `ridge_probe`, `knn_probe`), `run` the store runner that `lossxfer probe`
calls; `linear`, `ridge` and `knn` are the solvers and `common` what they share. This package
module imports nothing, so the registry stays light for --help and completion.
"""
