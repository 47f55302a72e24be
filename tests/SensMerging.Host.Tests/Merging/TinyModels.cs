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

    /// <summary>
    /// A stand-in for a real checkpoint: the tensor names of a Llama-layout model with <paramref name="layers"/> blocks
    /// (attention and MLP projections, both norms), tiny widths, seeded random values stored in <paramref name="dtype"/>
    /// (F32, F16 or BF16); experts are <paramref name="baseValues"/> plus small deltas. Returns the values as stored.
    /// </summary>
    public static Dictionary<string, float[]> WriteStandIn(
        string folder, int seed, int layers, SafeTensorsDType dtype, string modelType, Dictionary<string, float[]>? baseValues = null)
    {
        Directory.CreateDirectory(folder);
        const int hidden = 8, inner = 12, vocab = 16;
        var shapes = new List<(string Name, long[] Shape)> { ("model.embed_tokens.weight", [vocab, hidden]) };
        for (var l = 0; l < layers; l++)
        {
            var p = $"model.layers.{l}.";
            shapes.AddRange([
                (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [hidden, hidden]),
                (p + "self_attn.v_proj.weight", [hidden, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                (p + "mlp.gate_proj.weight", [inner, hidden]), (p + "mlp.up_proj.weight", [inner, hidden]), (p + "mlp.down_proj.weight", [hidden, inner]),
                (p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden])]);
        }
        shapes.AddRange([("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]);
        var random = new Random(seed);
        var values = new Dictionary<string, float[]>();
        var plan = shapes.Select(t => new TensorPlanEntry(t.Name, dtype, t.Shape)).ToList();
        using (var writer = new SafeTensorsWriter(Path.Combine(folder, "model.safetensors"), plan))
        {
            foreach (var entry in plan)
            {
                var n = (int)TensorShape.ElementCount(entry.Shape);
                var stored = new float[n];
                var bytes = new byte[n * dtype.Size];
                for (var i = 0; i < n; i++)
                {
                    var noise = (float)((random.NextDouble() * 2) - 1);
                    var value = baseValues is null ? noise : baseValues[entry.Name][i] + (0.05f * noise);
                    if (dtype == SafeTensorsDType.F16)
                    {
                        var half = (Half)value;
                        BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), BitConverter.HalfToUInt16Bits(half));
                        stored[i] = (float)half;
                    }
                    else if (dtype == SafeTensorsDType.BF16)
                    {
                        var bits = BitConverter.SingleToUInt32Bits(value);
                        var high = (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
                        BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), high);
                        stored[i] = BitConverter.UInt32BitsToSingle((uint)high << 16);
                    }
                    else
                    {
                        BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), value);
                        stored[i] = value;
                    }
                }
                values[entry.Name] = stored;
                writer.WriteTensor(entry.Name, bytes);
            }
            writer.Complete();
        }
        File.WriteAllText(Path.Combine(folder, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_type"] = modelType,
            ["architectures"] = new[] { modelType == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM" },
            ["hidden_size"] = hidden,
            ["intermediate_size"] = inner,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = 2,
            ["num_key_value_heads"] = 2,
            ["vocab_size"] = vocab,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = dtype.TorchDtypeName!,
        }));
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), """{"version":"1.0","model":{"type":"WordLevel","vocab":{"<unk>":0},"unk_token":"<unk>"}}""");
        return values;
    }
}
