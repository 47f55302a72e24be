using System.Globalization;

namespace SensMerging.Runtime.Tests;

/// <summary>
/// An independent Llama forward pass with double arrays and loops (no TorchSharp): RMSNorm, rotary embeddings
/// (rotate_half pairing i with i + d/2), grouped-query causal attention (optional sliding window), SwiGLU, tied or
/// untied head.
/// </summary>
internal static class ReferenceLlama
{
    public static double[][] Logits(TinyModel model, long[] ids)
    {
        var c = model.Config;
        var w = model.Weights;
        var t = ids.Length;
        var h = c.HiddenSize;
        var d = c.HeadDim;
        var x = new double[t][];
        var embed = w["model.embed_tokens.weight"];
        for (var i = 0; i < t; i++)
        {
            x[i] = new double[h];
            for (var j = 0; j < h; j++)
            {
                x[i][j] = embed[(ids[i] * h) + j];
            }
        }
        for (var l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = "model.layers." + l.ToString(CultureInfo.InvariantCulture) + ".";
            var normed = x.Select(row => RmsNorm(row, w[p + "input_layernorm.weight"], c.RmsNormEps)).ToArray();
            var q = normed.Select(row => MatVec(w[p + "self_attn.q_proj.weight"], Bias(w, p + "self_attn.q_proj.bias"), row, c.NumAttentionHeads * d)).ToArray();
            var k = normed.Select(row => MatVec(w[p + "self_attn.k_proj.weight"], Bias(w, p + "self_attn.k_proj.bias"), row, c.NumKeyValueHeads * d)).ToArray();
            var v = normed.Select(row => MatVec(w[p + "self_attn.v_proj.weight"], Bias(w, p + "self_attn.v_proj.bias"), row, c.NumKeyValueHeads * d)).ToArray();
            for (var pos = 0; pos < t; pos++)
            {
                for (var head = 0; head < c.NumAttentionHeads; head++)
                {
                    Rotate(q[pos], head * d, d, pos, c.RopeTheta);
                }
                for (var head = 0; head < c.NumKeyValueHeads; head++)
                {
                    Rotate(k[pos], head * d, d, pos, c.RopeTheta);
                }
            }
            var group = c.NumAttentionHeads / c.NumKeyValueHeads;
            var attended = new double[t][];
            for (var pos = 0; pos < t; pos++)
            {
                attended[pos] = new double[c.NumAttentionHeads * d];
                for (var head = 0; head < c.NumAttentionHeads; head++)
                {
                    var kvHead = head / group;
                    var scores = new double[pos + 1];
                    var max = double.NegativeInfinity;
                    for (var j = 0; j <= pos; j++)
                    {
                        if (c.SlidingWindow is { } window && pos - j >= window)
                        {
                            scores[j] = double.NegativeInfinity;
                            continue;
                        }
                        var dot = 0.0;
                        for (var e = 0; e < d; e++)
                        {
                            dot += q[pos][(head * d) + e] * k[j][(kvHead * d) + e];
                        }
                        scores[j] = dot / Math.Sqrt(d);
                        max = Math.Max(max, scores[j]);
                    }
                    var sum = 0.0;
                    for (var j = 0; j <= pos; j++)
                    {
                        scores[j] = Math.Exp(scores[j] - max);
                        sum += scores[j];
                    }
                    for (var j = 0; j <= pos; j++)
                    {
                        for (var e = 0; e < d; e++)
                        {
                            attended[pos][(head * d) + e] += scores[j] / sum * v[j][(kvHead * d) + e];
                        }
                    }
                }
            }
            for (var pos = 0; pos < t; pos++)
            {
                var o = MatVec(w[p + "self_attn.o_proj.weight"], Bias(w, p + "self_attn.o_proj.bias"), attended[pos], h);
                for (var j = 0; j < h; j++)
                {
                    x[pos][j] += o[j];
                }
                var n2 = RmsNorm(x[pos], w[p + "post_attention_layernorm.weight"], c.RmsNormEps);
                var gate = MatVec(w[p + "mlp.gate_proj.weight"], null, n2, c.IntermediateSize);
                var up = MatVec(w[p + "mlp.up_proj.weight"], null, n2, c.IntermediateSize);
                var act = new double[c.IntermediateSize];
                for (var j = 0; j < act.Length; j++)
                {
                    act[j] = gate[j] / (1 + Math.Exp(-gate[j])) * up[j];
                }
                var down = MatVec(w[p + "mlp.down_proj.weight"], null, act, h);
                for (var j = 0; j < h; j++)
                {
                    x[pos][j] += down[j];
                }
            }
        }
        var outputHead = c.TieWordEmbeddings ? embed : w["lm_head.weight"];
        return x.Select(row => MatVec(outputHead, null, RmsNorm(row, w["model.norm.weight"], c.RmsNormEps), c.VocabSize)).ToArray();
    }

    private static float[]? Bias(Dictionary<string, float[]> weights, string name) =>
        weights.TryGetValue(name, out var bias) ? bias : null;

    private static double[] RmsNorm(double[] x, float[] weight, double eps)
    {
        var mean = x.Sum(v => v * v) / x.Length;
        var scale = 1.0 / Math.Sqrt(mean + eps);
        return x.Select((v, i) => v * scale * weight[i]).ToArray();
    }

    /// <summary>y = W x (+ b) with W row-major [rows, x.Length].</summary>
    private static double[] MatVec(float[] weight, float[]? bias, double[] x, int rows)
    {
        var y = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            var sum = bias is null ? 0.0 : bias[r];
            for (var j = 0; j < x.Length; j++)
            {
                sum += weight[(r * x.Length) + j] * x[j];
            }
            y[r] = sum;
        }
        return y;
    }

    private static void Rotate(double[] vector, int start, int d, int position, double theta)
    {
        var half = d / 2;
        for (var i = 0; i < half; i++)
        {
            var angle = position * Math.Pow(theta, -2.0 * i / d);
            var x1 = vector[start + i];
            var x2 = vector[start + half + i];
            vector[start + i] = (x1 * Math.Cos(angle)) - (x2 * Math.Sin(angle));
            vector[start + half + i] = (x2 * Math.Cos(angle)) + (x1 * Math.Sin(angle));
        }
    }
}
