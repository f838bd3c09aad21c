//! The CPU backend: host `Vec<f32>` buffers and the CPU kernels of
//! `flow-kernels` (rayon-parallel), unchanged from before the backend layer,
//! so every CPU result is what it was.

use std::borrow::Cow;
use std::convert::Infallible;

use flow_kernels::cpu as k;
use rayon::prelude::*;

use super::{two_mut, AdamW, AttnParams, Backend, Keys, LinearOut};
use crate::weights::Params;

/// Today's CPU kernels over host buffers.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

type R<T> = Result<T, Infallible>;

/// One segment's share of a layer's attention: q, new k, new v, output, lse, and its keys.
type SegmentWork<'s, 'k, B> = (
    &'s [f32],
    &'s [f32],
    &'s [f32],
    &'s mut [f32],
    &'s mut [f32],
    &'s mut Keys<'k, B>,
);

impl Backend for CpuBackend {
    type Error = Infallible;
    type Buf = Vec<f32>;
    type Stats = Vec<f32>;
    type Ids = Vec<u32>;
    type Params = Params;
    type Weight = [f32];
    type Grads = Params;
    type Grad = [f32];
    type Rope = k::RopeTable;
    type KvLayer = Vec<f32>;

    fn zeros(&self, n: usize) -> R<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn zeros_stats(&self, n: usize) -> R<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn upload(&self, x: &[f32]) -> R<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn download(&self, x: Vec<f32>) -> R<Vec<f32>> {
        Ok(x)
    }
    fn duplicate(&self, x: &Vec<f32>) -> R<Vec<f32>> {
        Ok(x.clone())
    }
    fn upload_ids(&self, ids: &[u32]) -> R<Vec<u32>> {
        Ok(ids.to_vec())
    }
    fn gather_rows(&self, x: &Vec<f32>, rows: &[usize], width: usize) -> R<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * width);
        for &r in rows {
            out.extend_from_slice(&x[r * width..(r + 1) * width]);
        }
        Ok(out)
    }
    fn concat(&self, a: &Vec<f32>, b: &Vec<f32>) -> R<Vec<f32>> {
        let mut out = Vec::with_capacity(a.len() + b.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        Ok(out)
    }
    fn write_rows(
        &self,
        dst: &mut Vec<f32>,
        first_row: usize,
        width: usize,
        src: &Vec<f32>,
    ) -> R<()> {
        dst[first_row * width..first_row * width + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn params_from_host(&self, params: Params) -> R<Params> {
        Ok(params)
    }
    fn params_to_host<'a>(&self, params: &'a Params) -> R<Cow<'a, Params>> {
        Ok(Cow::Borrowed(params))
    }
    fn weight(params: &Params, i: usize) -> &[f32] {
        &params.data[i]
    }
    fn grads_zeroed(&self, params: &Params) -> R<Params> {
        Ok(params.zeros_like())
    }
    fn grads_to_host<'a>(&self, grads: &'a Params) -> R<Cow<'a, Params>> {
        Ok(Cow::Borrowed(grads))
    }
    fn grads_from_host(&self, grads: Params) -> R<Params> {
        Ok(grads)
    }
    fn grad_and_bias(
        grads: &mut Params,
        w: usize,
        b: Option<usize>,
    ) -> (&mut [f32], Option<&mut [f32]>) {
        let (gw, gb) = two_mut(&mut grads.data, w, b);
        (gw.as_mut_slice(), gb.map(|g| g.as_mut_slice()))
    }
    fn rope(&self, head_dim: usize, theta: f64, max_positions: usize) -> R<k::RopeTable> {
        Ok(k::RopeTable::new(head_dim, theta, max_positions))
    }
    fn duplicate_kv(&self, layer: &Vec<f32>) -> R<Vec<f32>> {
        Ok(layer.clone())
    }

    fn embedding_forward(
        &self,
        ids: &Vec<u32>,
        table: &[f32],
        dim: usize,
        out: &mut Vec<f32>,
    ) -> R<()> {
        k::embedding_forward(ids, table, dim, out);
        Ok(())
    }
    fn embedding_backward(
        &self,
        ids: &[u32],
        dout: &Vec<f32>,
        dim: usize,
        dtable: &mut [f32],
    ) -> R<()> {
        k::embedding_backward(ids, dout, dim, dtable);
        Ok(())
    }
    fn rmsnorm_forward(
        &self,
        x: &Vec<f32>,
        w: &[f32],
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
    ) -> R<()> {
        k::rmsnorm_forward(x, w, eps, rows, dim, y, rstd);
        Ok(())
    }
    fn rmsnorm_backward(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        w: &[f32],
        rstd: &Vec<f32>,
        rows: usize,
        dim: usize,
        dx: &mut Vec<f32>,
        dw: &mut [f32],
    ) -> R<()> {
        k::rmsnorm_backward(dy, x, w, rstd, rows, dim, dx, dw);
        Ok(())
    }
    fn linear_forward(
        &self,
        x: &Vec<f32>,
        w: &[f32],
        bias: Option<&[f32]>,
        t: usize,
        in_f: usize,
        out_f: usize,
        y: &mut Vec<f32>,
    ) -> R<()> {
        k::linear_forward(x, w, bias, t, in_f, out_f, y);
        Ok(())
    }
    fn linear_forward_shared(
        &self,
        x: &Vec<f32>,
        t: usize,
        in_f: usize,
        products: &mut [LinearOut<'_, CpuBackend>],
    ) -> R<()> {
        shared_products_on_host(x, t, in_f, products, |x, p| {
            k::linear_forward(x, p.w, p.bias, t, in_f, p.out_f, p.y)
        });
        Ok(())
    }
    fn linear_backward(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        w: &[f32],
        t: usize,
        in_f: usize,
        out_f: usize,
        dx: Option<&mut Vec<f32>>,
        dw: &mut [f32],
        dbias: Option<&mut [f32]>,
    ) -> R<()> {
        k::linear_backward(
            dy,
            x,
            w,
            t,
            in_f,
            out_f,
            dx.map(|d| d.as_mut_slice()),
            dw,
            dbias,
        );
        Ok(())
    }
    fn rope_forward(
        &self,
        x: &mut Vec<f32>,
        positions: &Vec<u32>,
        heads: usize,
        rope: &k::RopeTable,
    ) -> R<()> {
        k::rope_forward(x, positions, heads, rope);
        Ok(())
    }
    fn rope_backward(
        &self,
        dx: &mut Vec<f32>,
        positions: &Vec<u32>,
        heads: usize,
        rope: &k::RopeTable,
    ) -> R<()> {
        k::rope_backward(dx, positions, heads, rope);
        Ok(())
    }
    fn swiglu_forward(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>) -> R<()> {
        k::swiglu_forward(gate, up, out);
        Ok(())
    }
    fn swiglu_backward(
        &self,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        dout: &Vec<f32>,
        dgate: &mut Vec<f32>,
        dup: &mut Vec<f32>,
    ) -> R<()> {
        k::swiglu_backward(gate, up, dout, dgate, dup);
        Ok(())
    }
    fn add_in_place(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> R<()> {
        x.par_chunks_mut(4096)
            .zip(y.par_chunks(4096))
            .for_each(|(a, b)| {
                for (p, q) in a.iter_mut().zip(b) {
                    *p += *q;
                }
            });
        Ok(())
    }
    fn attention_forward(
        &self,
        params: &AttnParams,
        layer: usize,
        lens: &[usize],
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        keys: &mut [Keys<'_, CpuBackend>],
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
    ) -> R<()> {
        attention_forward_on_host(params, layer, lens, q, k, v, keys, out, lse);
        Ok(())
    }
    fn attention_backward(
        &self,
        params: &AttnParams,
        lens: &[usize],
        docs: &[Option<&[u32]>],
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        dout: &Vec<f32>,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
    ) -> R<()> {
        let qd = params.q_heads * params.head_dim;
        let kvd = params.kv_heads * params.head_dim;
        let qs = split_rows(q, lens, qd);
        let ks = split_rows(k, lens, kvd);
        let vs = split_rows(v, lens, kvd);
        let os = split_rows(out, lens, qd);
        let ls = split_rows(lse, lens, params.q_heads);
        let dos = split_rows(dout, lens, qd);
        let dqs = split_rows_mut(dq, lens, qd);
        let dks = split_rows_mut(dk, lens, kvd);
        let dvs = split_rows_mut(dv, lens, kvd);
        dqs.into_par_iter()
            .zip(dks)
            .zip(dvs)
            .enumerate()
            .for_each(|(s, ((dqs, dks), dvs))| {
                let n = lens[s];
                if n > 0 {
                    k::attention_backward(
                        params, n, n, qs[s], ks[s], vs[s], docs[s], os[s], ls[s], dos[s], dqs, dks,
                        dvs,
                    );
                }
            });
        Ok(())
    }
    fn cross_entropy(
        &self,
        logits: &Vec<f32>,
        targets: &[i32],
        rows: usize,
        vocab: usize,
        dlogits: Option<(&mut Vec<f32>, f32)>,
    ) -> R<(f64, usize)> {
        Ok(k::cross_entropy(
            logits,
            targets,
            rows,
            vocab,
            dlogits.map(|(d, s)| (d.as_mut_slice(), s)),
        ))
    }

    fn zero_grads(&self, grads: &mut Params) -> R<()> {
        grads.data.par_iter_mut().for_each(|g| g.fill(0.0));
        Ok(())
    }
    fn grad_norm(&self, grads: &Params) -> R<f64> {
        Ok(grads
            .data
            .par_iter()
            .map(|g| k::sum_of_squares(g))
            // in tensor order, whatever the threads (see sum_of_squares)
            .collect::<Vec<f64>>()
            .iter()
            .sum::<f64>()
            .sqrt())
    }
    fn scale_grads(&self, grads: &mut Params, s: f32) -> R<()> {
        grads
            .data
            .par_iter_mut()
            .for_each(|g| k::scale_in_place(g, s));
        Ok(())
    }
    fn adamw(
        &self,
        decay: &AdamW,
        no_decay: &AdamW,
        step: u64,
        params: &mut Params,
        grads: &Params,
        m: &mut Params,
        v: &mut Params,
    ) -> R<()> {
        let shapes = &params.shapes;
        params
            .data
            .par_iter_mut()
            .zip(grads.data.par_iter())
            .zip(m.data.par_iter_mut().zip(v.data.par_iter_mut()))
            .enumerate()
            .for_each(|(i, ((p, g), (m, v)))| {
                let cfg = if shapes[i].len() >= 2 {
                    decay
                } else {
                    no_decay
                };
                k::adamw_step(cfg, step, p, g, m, v);
            });
        Ok(())
    }
}

/// The CPU attention of every segment, for any backend whose activations and
/// cached keys are host `Vec<f32>`s (the CPU backends).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_forward_on_host<B: Backend<KvLayer = Vec<f32>>>(
    params: &AttnParams,
    layer: usize,
    lens: &[usize],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keys: &mut [Keys<'_, B>],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let qd = params.q_heads * params.head_dim;
    let kvd = params.kv_heads * params.head_dim;
    let qs = split_rows(q, lens, qd);
    let ks = split_rows(k, lens, kvd);
    let vs = split_rows(v, lens, kvd);
    let outs = split_rows_mut(out, lens, qd);
    let lses = split_rows_mut(lse, lens, params.q_heads);
    let work: Vec<SegmentWork<'_, '_, B>> = qs
        .into_iter()
        .zip(ks)
        .zip(vs)
        .zip(outs)
        .zip(lses)
        .zip(keys.iter_mut())
        .map(|(((((q, k), v), out), lse), keys)| (q, k, v, out, lse, keys))
        .collect();
    work.into_par_iter()
        .for_each(|(qs, ks, vs, out, lse, keys)| {
            let n = qs.len() / qd;
            if n == 0 {
                return;
            }
            match keys {
                Keys::Cache(cache) => {
                    let (kc, vc) = cache.layer_mut(layer);
                    kc.extend_from_slice(ks);
                    vc.extend_from_slice(vs);
                    let s = kc.len() / kvd;
                    k::attention_forward(params, n, s, qs, kc, vc, None, out, lse);
                }
                Keys::Own(docs) => {
                    k::attention_forward(params, n, n, qs, ks, vs, *docs, out, lse);
                }
            }
        });
}

/// The shared-input products of a CPU backend whose weights are `[E]`: up to
/// `SKINNY_ROWS` rows in one streaming pass over every product's weights
/// (biases added after), more through `one` per product.
pub(super) fn shared_products_on_host<B, E>(
    x: &[f32],
    t: usize,
    in_f: usize,
    products: &mut [LinearOut<'_, B>],
    mut one: impl FnMut(&[f32], &mut LinearOut<'_, B>),
) where
    B: Backend<Weight = [E], Buf = Vec<f32>>,
    E: k::skinny::WeightElem,
{
    if t > k::SKINNY_ROWS {
        for p in products.iter_mut() {
            one(x, p);
        }
        return;
    }
    let mut outs: Vec<(&[E], usize, &mut [f32])> = products
        .iter_mut()
        .map(|p| (p.w, p.out_f, p.y.as_mut_slice()))
        .collect();
    k::skinny_products(x, t, in_f, &mut outs);
    for p in products.iter_mut() {
        if let Some(b) = p.bias {
            for row in p.y.chunks_exact_mut(p.out_f.max(1)) {
                for (o, b) in row.iter_mut().zip(b) {
                    *o += b.to_f32();
                }
            }
        }
    }
}

/// Splits `buf` into consecutive chunks of `lens[i] * width`.
fn split_rows<'b>(buf: &'b [f32], lens: &[usize], width: usize) -> Vec<&'b [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (a, b) = rest.split_at(n * width);
        out.push(a);
        rest = b;
    }
    out
}

fn split_rows_mut<'b>(buf: &'b mut [f32], lens: &[usize], width: usize) -> Vec<&'b mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = buf;
    for &n in lens {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(n * width);
        out.push(a);
        rest = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_copies_pick_and_place_whole_rows() {
        let b = CpuBackend;
        // 4 rows of width 3: row r holds r*10 + column
        let x: Vec<f32> = (0..4)
            .flat_map(|r| (0..3).map(move |c| (r * 10 + c) as f32))
            .collect();
        let picked = infallible_ok(b.gather_rows(&x, &[3, 0, 3], 3));
        assert_eq!(picked, vec![30., 31., 32., 0., 1., 2., 30., 31., 32.]);
        let joined = infallible_ok(b.concat(&vec![1., 2.], &vec![3.]));
        assert_eq!(joined, vec![1., 2., 3.]);
        let mut dst = vec![0.0; 12];
        infallible_ok(b.write_rows(&mut dst, 2, 3, &vec![7., 8., 9., 4., 5., 6.]));
        assert_eq!(dst, vec![0., 0., 0., 0., 0., 0., 7., 8., 9., 4., 5., 6.]);
    }

    #[test]
    fn grad_and_bias_hands_out_the_named_tensors_in_either_order() {
        let mut g = Params {
            names: vec!["a".into(), "b".into(), "c".into()],
            shapes: vec![vec![1], vec![2], vec![3]],
            data: vec![vec![0.0], vec![0.0; 2], vec![0.0; 3]],
        };
        for (w, bias) in [(0, Some(2)), (2, Some(1)), (1, None)] {
            let (gw, gb) = CpuBackend::grad_and_bias(&mut g, w, bias);
            assert_eq!(gw.len(), w + 1);
            assert_eq!(gb.map(|x| x.len()), bias.map(|b| b + 1));
        }
    }

    fn infallible_ok<T>(r: R<T>) -> T {
        super::super::infallible(r)
    }
}
