"""Test oracles and fixtures shared by the tests and the benchmarks (not a public API).

* `reference_fixing`: slow, obviously-correct dense versions of the fixing stage and of
  the power-of-two rounding that the fast core must equal.
* `architecture_matrix`: real architectures (keras.applications, a Transformer encoder)
  through fix, fit, strip and palette TFLite export; the README's architecture matrix.

Import the submodules directly; this package imports nothing on its own. It may use every
package of tfmot_wfn except `apps`.
"""
