// One Adam update of one parameter tensor, fused: gradient-norm clipping, weight decay, both
// moments and the parameter, in one launch.
//
// One workgroup for the whole tensor (the clip needs the gradient's norm before any update):
//   coef  = min(threshold / (|g|₂ + min_positive), 1)       (clip = 0: coef = 1)
//   g'    = p·λ + g·coef                                     (decay = 0: g' = g·coef)
//   m'    = m·β₁ + g'·(1 − β₁)
//   v'    = v·β₂ + g'²·(1 − β₂)
//   p'    = p − lr · m'·c / (√v' + ε·√(1 − β₂ᵗ)),  c = √(1 − β₂ᵗ) / (1 − β₁ᵗ)
// Burn's `Adam` with `GradientClipping::Norm` computes the same (`FusedAdam::twin`, its twin);
// on the first step m = v = 0, which gives Burn's first moments exactly.
//
// Every tensor binding is read_write: Burn's buffers are pooled pages that several tensors
// share. Indices are checked here: the runtime compiles this text without bounds checks.

@group(0) @binding(0) var<storage, read_write> param: array<f32>;      // [n]
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read_write> moment_1: array<f32>;   // [n]
@group(0) @binding(3) var<storage, read_write> moment_2: array<f32>;   // [n]
@group(0) @binding(4) var<storage, read_write> param_out: array<f32>;  // [n]
@group(0) @binding(5) var<storage, read_write> moment_1_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> moment_2_out: array<f32>;
// n, clip (0/1), threshold, decay (0/1), λ, β₁, β₂, lr, c, ε·√(1 − β₂ᵗ), min_positive, unused
// (all but n and the two flags are f32 bits)
@group(0) @binding(7) var<storage, read> info: array<u32>;

const THREADS: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lane: u32) {
    let n = info[0];
    let clip = info[1];
    let threshold = bitcast<f32>(info[2]);
    let decay = info[3];
    let penalty = bitcast<f32>(info[4]);
    let beta_1 = bitcast<f32>(info[5]);
    let beta_2 = bitcast<f32>(info[6]);
    let lr = bitcast<f32>(info[7]);
    let correction = bitcast<f32>(info[8]);
    let epsilon = bitcast<f32>(info[9]);
    let min_positive = bitcast<f32>(info[10]);

    // Σ g², then the clip coefficient (every lane takes part in the barriers).
    var local_sum = 0.0;
    for (var i = lane; i < n; i = i + THREADS) {
        let g = grad[i];
        local_sum = local_sum + g * g;
    }
    partial[lane] = local_sum;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] = partial[lane] + partial[lane + stride];
        }
        workgroupBarrier();
    }
    var coef = 1.0;
    if (clip == 1u) {
        coef = min(threshold / (sqrt(partial[0]) + min_positive), 1.0);
    }

    for (var i = lane; i < n; i = i + THREADS) {
        let p = param[i];
        var g = grad[i];
        if (clip == 1u) {
            g = g * coef;
        }
        if (decay == 1u) {
            g = p * penalty + g;
        }
        let m = moment_1[i] * beta_1 + g * (1.0 - beta_1);
        let v = moment_2[i] * beta_2 + (g * g) * (1.0 - beta_2);
        moment_1_out[i] = m;
        moment_2_out[i] = v;
        param_out[i] = p - (m * correction / (sqrt(v) + epsilon)) * lr;
    }
}
