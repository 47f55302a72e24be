using System.Globalization;
using SensMerging.Core.Engine;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Bench;

/// <summary>Synthetic models with the tensor shapes of a 1B-class Llama decoder (TinyLlama-1.1B), fewer layers.</summary>
internal static class SyntheticModels
{
    public const int Hidden = 2048;
    public const int Intermediate = 5632;
    public const int Vocab = 32000;
    public const int Heads = 32;
    public const int KvHeads = 4;

    private const long PoolElements = 1L << 22;
    private const long PoolOffsets = 1L << 20;

    private static void Fill(Tensor target, Tensor pool, long seed, double scale, bool add)
    {
        using var flat = target.view(target.NumberOfElements);
        var offset = seed % PoolOffsets;
        for (long at = 0; at < flat.shape[0]; at += PoolElements)
        {
            var n = Math.Min(PoolElements, flat.shape[0] - at);
            using var dst = flat.narrow(0, at, n);
            using var src = pool.narrow(0, (offset + at / PoolElements * 7919) % PoolOffsets, n);
            if (add)
            {
                dst.add_(src, alpha: scale);
            }
            else
            {
                dst.copy_(src).mul_(scale);
            }
        }
    }

    public static List<(string Name, long[] Shape)> Shapes(int layers)
    {
        var kv = Hidden / Heads * KvHeads;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [Vocab, Hidden]) };
        for (var l = 0; l < layers; l++)
        {
            var p = "model.layers." + l.ToString(CultureInfo.InvariantCulture) + ".";
            list.Add((p + "input_layernorm.weight", [Hidden]));
            list.Add((p + "self_attn.q_proj.weight", [Hidden, Hidden]));
            list.Add((p + "self_attn.k_proj.weight", [kv, Hidden]));
            list.Add((p + "self_attn.v_proj.weight", [kv, Hidden]));
            list.Add((p + "self_attn.o_proj.weight", [Hidden, Hidden]));
            list.Add((p + "post_attention_layernorm.weight", [Hidden]));
            list.Add((p + "mlp.gate_proj.weight", [Intermediate, Hidden]));
            list.Add((p + "mlp.up_proj.weight", [Intermediate, Hidden]));
            list.Add((p + "mlp.down_proj.weight", [Hidden, Intermediate]));
        }
        list.Add(("model.norm.weight", [Hidden]));
        list.Add(("lm_head.weight", [Vocab, Hidden]));
        return list;
    }

    /// <summary>
    /// Writes base + experts in each dtype: base ~ N(0, 0.02), expert_i = base + N(0, 0.002). Returns folders per dtype
    /// (index 0 is the base).
    /// </summary>
    public static Dictionary<SafeTensorsDType, List<string>> Make(string root, int layers, int experts, IReadOnlyList<SafeTensorsDType> dtypes, long shardBytes)
    {
        var shapes = Shapes(layers);
        var result = dtypes.ToDictionary(d => d, _ => new List<string>());
        using var noGrad = torch.no_grad();
        // Values come from slices of one random pool at seeded offsets: random enough for the strategies (signs and
        // magnitudes vary), and cheap to make, so generating gigabytes does not dominate the run.
        using var generator = new torch.Generator(1234);
        using var pool = torch.randn(PoolElements + PoolOffsets, generator: generator);
        for (var m = 0; m <= experts; m++)
        {
            var name = m == 0 ? "base" : "expert" + m.ToString(CultureInfo.InvariantCulture);
            var writers = new Dictionary<SafeTensorsDType, ShardedSafeTensorsWriter>();
            foreach (var d in dtypes)
            {
                var folder = Path.Combine(root, d.Name.ToLowerInvariant(), name);
                if (Directory.Exists(folder))
                {
                    Directory.Delete(folder, recursive: true);
                }
                Directory.CreateDirectory(folder);
                File.WriteAllText(Path.Combine(folder, "config.json"),
                    $$"""{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":{{Hidden}},"intermediate_size":{{Intermediate}},"num_hidden_layers":{{layers}},"num_attention_heads":{{Heads}},"num_key_value_heads":{{KvHeads}},"vocab_size":{{Vocab}},"tie_word_embeddings":false,"torch_dtype":"{{d.TorchDtypeName}}"}""");
                writers[d] = new ShardedSafeTensorsWriter(folder, [.. shapes.Select(s => new TensorPlanEntry(s.Name, d, s.Shape))], shardBytes, computeSha256: false);
                result[d].Add(folder);
            }
            foreach (var (tensorName, shape) in shapes)
            {
                using var scope = torch.NewDisposeScope();
                var values = torch.empty(shape);
                Fill(values, pool, StableSeed.Derive(1234, tensorName, 0), 0.02, add: false);
                if (m > 0)
                {
                    Fill(values, pool, StableSeed.Derive(1234, tensorName, m), 0.002, add: true);
                }
                foreach (var (d, writer) in writers)
                {
                    var typed = d == SafeTensorsDType.F32 ? values : values.to_type(d.RequireScalarType());
                    TensorBytes.ForEachSpan(typed, (span, at) => writer.WriteChunk(tensorName, at, span));
                }
            }
            foreach (var w in writers.Values)
            {
                w.Complete();
                w.Dispose();
            }
        }
        return result;
    }
}
