"""Finding and certifying an optimum: starts, the Newton core (`newton`, `matrix_free`,
`cg`), running many problems on devices (`placement`), the entry points (`solve`,
`batch`), their boundary (`requests`) and verdicts (`result`), the certificate of §3,
derivatives through the optimum (`implicit`, §8) and the gradient-flow reference path
(`flow`)."""
