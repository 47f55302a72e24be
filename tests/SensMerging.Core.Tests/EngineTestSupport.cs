using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Tests;

/// <summary>Test-only strategy: output = base + sum_i w_i * (model_i - base) (or sum_i w_i * model_i without a base).</summary>
internal sealed class WeightedSumStrategy(bool elementwise = true, bool requiresBase = false) : IMergeStrategy
{
    public string Name => "weighted_sum";

    public string Description => "Test strategy.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

    public StrategyTraits Traits { get; } = new(requiresBase, MinModels: 1, MaxModels: 4, Elementwise: elementwise);

    public List<long[]> SeenShapes { get; } = [];

    public void Merge(MergeTensorRequest request)
    {
        lock (SeenShapes)
        {
            SeenShapes.Add(request.Output.shape);
        }
        var output = request.Output;
        if (request.Base is null)
        {
            output.zero_();
        }
        else
        {
            output.copy_(request.Base);
        }
        var delta = request.Scratch.Rent();
        for (var i = 0; i < request.Models.Count; i++)
        {
            if (request.Base is null)
            {
                output.add_(request.Models[i], alpha: request.Weights[i]);
            }
            else
            {
                delta.copy_(request.Models[i]).sub_(request.Base);
                output.add_(delta, alpha: request.Weights[i]);
            }
        }
    }
}

/// <summary>Test-only seeded strategy: keeps each element of the first model with probability 1/2 (a DARE-like drop).</summary>
internal sealed class SeededDropStrategy : IMergeStrategy
{
    public string Name => "seeded_drop";

    public string Description => "Test strategy.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [];

    public StrategyTraits Traits { get; } = new(false, UsesRandomness: true, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        using var generator = new torch.Generator((ulong)request.Seed);
        var mask = request.Scratch.Rent();
        mask.uniform_(0, 1, generator);
        request.Output.copy_(request.Models[0]).mul_(mask.lt_(0.5));
    }
}

/// <summary>Builds tiny model folders with the production writer.</summary>
internal static class TinyModels
{
    public static readonly (string Name, long[] Shape)[] Llama =
    [
        ("model.embed_tokens.weight", [16, 8]),
        ("model.layers.0.self_attn.q_proj.weight", [8, 8]),
        ("model.layers.0.mlp.up_proj.weight", [12, 8]),
        ("model.layers.0.input_layernorm.weight", [8]),
        ("model.layers.1.self_attn.q_proj.weight", [8, 8]),
        ("model.layers.1.mlp.up_proj.weight", [12, 8]),
        ("model.layers.1.input_layernorm.weight", [8]),
        ("model.norm.weight", [8]),
        ("lm_head.weight", [16, 8]),
    ];

    /// <summary>
    /// Makes a model whose tensor values are seeded random (changed by <paramref name="edit"/>, given each tensor's float32
    /// values before they are rounded to the file's dtype); returns the folder and the float32 values stored.
    /// </summary>
    public static (string Path, Dictionary<string, float[]> Values) Make(
        string folder, int seed, SafeTensorsDType dtype, long shardBytes = long.MaxValue, (string Name, long[] Shape)[]? tensors = null,
        Func<string, SafeTensorsDType>? dtypeOf = null, Action<string, float[]>? edit = null)
    {
        tensors ??= Llama;
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"),
            $$"""{"model_type":"llama","num_hidden_layers":2,"hidden_size":8,"vocab_size":16,"torch_dtype":"{{dtype.TorchDtypeName}}"}""");
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), "{\"seed\":" + seed + "}");
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{}");
        var values = new Dictionary<string, float[]>();
        var plan = tensors.Select(t => new TensorPlanEntry(t.Name, dtypeOf?.Invoke(t.Name) ?? dtype, t.Shape)).ToList();
        using var writer = new ShardedSafeTensorsWriter(folder, plan, shardBytes);
        using var generator = new torch.Generator((ulong)seed);
        foreach (var t in plan)
        {
            using var scope = torch.NewDisposeScope();
            var f32 = torch.randn(t.Shape.ToArray(), generator: generator);
            if (edit is not null && f32.NumberOfElements > 0)
            {
                var data = f32.data<float>().ToArray();
                edit(t.Name, data);
                f32 = torch.tensor(data).reshape(t.Shape.ToArray());
            }
            var typed = f32.to_type(t.DType.RequireScalarType());
            // The exact values stored (after rounding to the file's dtype), as float32.
            values[t.Name] = typed.NumberOfElements == 0 ? [] : typed.to_type(ScalarType.Float32).data<float>().ToArray();
            writer.WriteTensor(t.Name, typed.NumberOfElements == 0 ? [] : typed.bytes);
        }
        writer.Complete();
        return (folder, values);
    }
}
