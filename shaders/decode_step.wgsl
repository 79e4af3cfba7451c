// One decoding step of the GoalRank generator, fused: scores, mask, log-softmax, pick.
//
// One workgroup per row r = (request b, list k). For every candidate j:
//   s_j     = <query_r, key_bj> / sqrt(d), or -1e9 where candidate j was chosen already
//   logp_j  = s_j - logsumexp(s)
//   pick    = argmax_j logp_j                        (greedy, mode 0)
//           = argmax_j logp_j / temperature + g_rj   (a draw, mode 1; g is Gumbel noise)
// and the row's chosen mask comes back with the pick added. Ties go to the lowest index.
// The tensor-op twin is `decode_step::twin` in src/model/decode_step.rs.
//
// Every tensor binding is read_write: Burn's buffers are pooled pages that several tensors
// share. Indices are checked here: the runtime compiles this text without bounds checks.

@group(0) @binding(0) var<storage, read_write> queries: array<f32>;     // [R, d]
@group(0) @binding(1) var<storage, read_write> keys: array<f32>;        // [B, N, d]
@group(0) @binding(2) var<storage, read_write> chosen: array<f32>;      // [R, N], 1 = chosen
@group(0) @binding(3) var<storage, read_write> noise: array<f32>;       // [R, N] (mode 1)
@group(0) @binding(4) var<storage, read_write> picks: array<i32>;       // [R]
@group(0) @binding(5) var<storage, read_write> log_probs: array<f32>;   // [R]
@group(0) @binding(6) var<storage, read_write> chosen_out: array<f32>;  // [R, N]
// rows, N, d, K (lists per request), mode, temperature bits, sqrt(d) bits, unused
@group(0) @binding(7) var<storage, read> info: array<u32>;

const THREADS: u32 = 64u;
const MASKED: f32 = -1e9;

var<workgroup> best_value: array<f32, 64>;
var<workgroup> best_index: array<u32, 64>;
var<workgroup> partial: array<f32, 64>;

fn score(r: u32, b: u32, j: u32, n: u32, d: u32, sqrt_d: f32) -> f32 {
    if (chosen[r * n + j] > 0.5) {
        return MASKED;
    }
    var dot = 0.0;
    let q = r * d;
    let k = (b * n + j) * d;
    for (var i = 0u; i < d; i = i + 1u) {
        dot = dot + queries[q + i] * keys[k + i];
    }
    return dot / sqrt_d;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rows = info[0];
    let n = info[1];
    let d = info[2];
    let lists = info[3];
    let mode = info[4];
    let temperature = bitcast<f32>(info[5]);
    let sqrt_d = bitcast<f32>(info[6]);
    let r = group.x + group.y * groups.x;
    if (r >= rows) {
        return;
    }
    let b = r / lists;

    // The row's largest score.
    var local_max = MASKED * 2.0;
    for (var j = lane; j < n; j = j + THREADS) {
        local_max = max(local_max, score(r, b, j, n, d, sqrt_d));
    }
    partial[lane] = local_max;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] = max(partial[lane], partial[lane + stride]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();

    // log Σ exp(s - max).
    var local_sum = 0.0;
    for (var j = lane; j < n; j = j + THREADS) {
        local_sum = local_sum + exp(score(r, b, j, n, d, sqrt_d) - row_max);
    }
    partial[lane] = local_sum;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] = partial[lane] + partial[lane + stride];
        }
        workgroupBarrier();
    }
    let log_norm = row_max + log(partial[0]);

    // The pick: the largest key, lowest index on ties.
    var value = MASKED * 4.0;
    var index = n;
    for (var j = lane; j < n; j = j + THREADS) {
        var key = score(r, b, j, n, d, sqrt_d) - log_norm;
        if (mode == 1u) {
            key = key / temperature + noise[r * n + j];
        }
        if (key > value) {
            value = key;
            index = j;
        }
    }
    best_value[lane] = value;
    best_index[lane] = index;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            let other = best_value[lane + stride];
            let other_index = best_index[lane + stride];
            if (other > best_value[lane]
                || (other == best_value[lane] && other_index < best_index[lane])) {
                best_value[lane] = other;
                best_index[lane] = other_index;
            }
        }
        workgroupBarrier();
    }
    let pick = min(best_index[0], n - 1u);

    if (lane == 0u) {
        picks[r] = i32(pick);
        log_probs[r] = score(r, b, pick, n, d, sqrt_d) - log_norm;
    }
    for (var j = lane; j < n; j = j + THREADS) {
        var mark = chosen[r * n + j];
        if (j == pick) {
            mark = mark + 1.0;
        }
        chosen_out[r * n + j] = mark;
    }
}
