using System.Text.Json;
using SensMerging.Core.SafeTensors;

namespace SensMerging.Host.Tests.Merging;

/// <summary>Small Llama-layout model folders with seeded random F32 weights, written with the project's safetensors writer.</summary>
internal static class TinyModels
{
    public static readonly (string Name, long[] Shape)[] Tensors =
    [
        ("model.embed_tokens.weight", [32, 16]),
        ("model.layers.0.self_attn.q_proj.weight", [16, 16]),
        ("model.layers.0.mlp.up_proj.weight", [24, 16]),
        ("model.layers.0.input_layernorm.weight", [16]),
        ("model.layers.1.self_attn.q_proj.weight", [16, 16]),
        ("model.layers.1.mlp.up_proj.weight", [24, 16]),
        ("model.layers.1.input_layernorm.weight", [16]),
        ("model.norm.weight", [16]),
        ("lm_head.weight", [32, 16]),
    ];

    /// <summary>
    /// Writes a model whose weights are <paramref name="seed"/>-random (experts: base + small random deltas), with
    /// <paramref name="extraTensors"/> after the usual ones and each tensor's values changed by <paramref name="edit"/> before they are written.
    /// </summary>
    public static Dictionary<string, float[]> Write(
        string folder, int seed, Dictionary<string, float[]>? baseWeights = null, float deltaScale = 0.1f, long[]? scaleShape = null,
        (string Name, long[] Shape)[]? extraTensors = null, Action<string, float[]>? edit = null)
    {
        Directory.CreateDirectory(folder);
        var random = new Random(seed);
        var values = new Dictionary<string, float[]>();
        var plan = Tensors.Select(t => new TensorPlanEntry(t.Name, SafeTensorsDType.F32, scaleShape is null ? t.Shape : [t.Shape[0] * scaleShape[0], .. t.Shape.Skip(1)]))
            .Concat((extraTensors ?? []).Select(t => new TensorPlanEntry(t.Name, SafeTensorsDType.F32, t.Shape))).ToList();
        using (var writer = new SafeTensorsWriter(Path.Combine(folder, "model.safetensors"), plan))
        {
            foreach (var entry in plan)
            {
                var n = (int)TensorShape.ElementCount(entry.Shape);
                var data = new float[n];
                for (var i = 0; i < n; i++)
                {
                    var noise = (float)(random.NextDouble() * 2 - 1);
                    data[i] = baseWeights is null || !baseWeights.TryGetValue(entry.Name, out var b) ? noise : b[i] + deltaScale * noise;
                }
                edit?.Invoke(entry.Name, data);
                values[entry.Name] = data;
                writer.WriteTensor(entry.Name, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
            }
            writer.Complete();
        }
        File.WriteAllText(Path.Combine(folder, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_type"] = "llama",
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["hidden_size"] = 16,
            ["intermediate_size"] = 24,
            ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["vocab_size"] = 32,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = "float32",
        }));
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), """{"version":"1.0","model":{"type":"WordLevel","vocab":{"<unk>":0},"unk_token":"<unk>"}}""");
        return values;
    }
}
