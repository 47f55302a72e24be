using SensMerging.Abstractions;
using SensMerging.Core.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.Tests;

/// <summary>Runs a strategy on plain arrays and returns plain arrays; checks the contract (inputs untouched, scratch alive).</summary>
internal static class MergeHarness
{
    public static float[] Run(
        IMergeStrategy strategy,
        float[]? baseValues,
        float[][] models,
        double[]? weights = null,
        Dictionary<string, object>? global = null,
        Dictionary<string, object>[]? perModel = null,
        long seed = 0,
        long[]? shape = null,
        bool torchPath = false,
        ScalarType compute = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        var n = models[0].Length;
        shape ??= [n];
        weights ??= [.. models.Select(_ => 1.0)];
        var parameters = Parameters(strategy, weights, global, perModel);

        using var scratch = new TestScratch(shape);
        using var baseTensor = baseValues is null ? null : Input(baseValues, shape, torchPath);
        var inputs = models.Select(m => Input(m, shape, torchPath)).ToList();
        using var output = torch.empty(shape, ScalarType.Float32).fill_(double.NaN);
        try
        {
            strategy.Merge(new MergeTensorRequest
            {
                TensorName = "model.layers.0.mlp.up_proj.weight",
                LayerGroup = "model.layers.0",
                Base = baseTensor,
                Models = inputs,
                ModelNames = [.. models.Select((_, i) => $"expert{i}")],
                Weights = weights,
                Parameters = parameters,
                Output = output,
                Scratch = scratch,
                Seed = seed,
                LayerIndex = 0,
                LayerCount = 1,
                ComputeDType = compute,
            });
            if (baseValues is not null)
            {
                Assert.Equal(baseValues, baseTensor!.reshape(-1).data<float>().ToArray());
            }
            for (var i = 0; i < models.Length; i++)
            {
                Assert.Equal(models[i], inputs[i].reshape(-1).data<float>().ToArray());
            }
            foreach (var rented in scratch.Rented)
            {
                Assert.False(rented.IsInvalid, "a rented scratch tensor was disposed by the strategy");
            }
            return output.reshape(-1).data<float>().ToArray();
        }
        finally
        {
            foreach (var input in inputs)
            {
                input.Dispose();
            }
        }
    }

    /// <summary>
    /// Drives the block protocol of <see cref="IStreamingMergeStrategy"/> over blocks of <paramref name="block"/> elements
    /// (the last one shorter), as a host would: every statistics pass over all blocks, then the merge of each block.
    /// </summary>
    public static float[] Stream(
        IStreamingMergeStrategy strategy, float[] b, float[][] xs, double[] weights, Dictionary<string, object>? global,
        Dictionary<string, object>[]? perModel, long seed, int block) =>
        Stream(strategy, b, xs, weights, global, perModel, seed, block, out _);

    /// <summary><see cref="Stream(IStreamingMergeStrategy, float[], float[][], double[], Dictionary{string, object}?, Dictionary{string, object}[]?, long, int)"/>, also telling how many statistics passes the session asked for.</summary>
    public static float[] Stream(
        IStreamingMergeStrategy strategy, float[] b, float[][] xs, double[] weights, Dictionary<string, object>? global,
        Dictionary<string, object>[]? perModel, long seed, int block, out int passes, long[]? shape = null)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        var n = b.Length;
        var info = Info(strategy, n, weights, global, perModel, seed);
        if (shape is not null)
        {
            info = new MergeTensorInfo
            {
                TensorName = info.TensorName,
                LayerGroup = info.LayerGroup,
                Shape = shape,
                HasBase = info.HasBase,
                ModelNames = info.ModelNames,
                Weights = info.Weights,
                Parameters = info.Parameters,
                Seed = info.Seed,
                LayerIndex = info.LayerIndex,
                LayerCount = info.LayerCount,
            };
        }
        var result = new float[n];
        using var session = strategy.BeginTensor(info);
        passes = 0;
        for (; session.BeginPass(passes); passes++)
        {
            ForEachBlock(n, block, (start, count) => Apply(session.Observe, start, count));
        }
        ForEachBlock(n, block, (start, count) => Apply(session.Merge, start, count).CopyTo(result.AsSpan(start, count)));
        return result;

        float[] Apply(Action<MergeTensorRequest> step, int start, int count)
        {
            using var scope = torch.NewDisposeScope();
            using var scratch = new TestScratch([count]);
            var output = torch.full(count, float.NaN);
            step(Block(torch.tensor(b[start..(start + count)]), [.. xs.Select(x => torch.tensor(x[start..(start + count)]))], output, scratch, weights, info, start));
            return output.data<float>().ToArray();
        }
    }

    /// <summary>
    /// Weights (one negative, not summing to one) and parameters for three experts that every task-arithmetic variant
    /// reads: lambda, and per model a density and a breadcrumbs gamma.
    /// </summary>
    /// <summary>Three experts' weights and values, each value kept only where <paramref name="strategy"/> declares it (a host refuses the others).</summary>
    public static (double[] Weights, Dictionary<string, object> Global, Dictionary<string, object>[] PerModel) ThreeExperts(IMergeStrategy strategy)
    {
        Dictionary<string, object> Declared(Dictionary<string, object> values) =>
            values.Where(kv => strategy.Parameters.Any(p => p.Name == kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return ([0.6, -0.4, 1.1],
            Declared(new() { ["lambda"] = 0.8 }),
            [
                Declared(new() { ["density"] = 0.5, ["gamma"] = 0.02 }),
                Declared(new() { ["density"] = 0.25, ["gamma"] = 0.1 }),
                Declared(new() { ["density"] = 0.9, ["gamma"] = 0.0 }),
            ]);
    }

    /// <summary>Calls <paramref name="action"/>(start, count) for consecutive blocks of <paramref name="block"/> elements.</summary>
    public static void ForEachBlock(int n, int block, Action<int, int> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        for (var start = 0; start < n; start += block)
        {
            action(start, Math.Min(block, n - start));
        }
    }

    /// <summary>A flat tensor of <paramref name="n"/> elements in layer 0, as a host describes it before streaming it.</summary>
    public static MergeTensorInfo Info(
        IMergeStrategy strategy, long n, double[] weights, Dictionary<string, object>? global, Dictionary<string, object>[]? perModel, long seed) => new()
    {
        TensorName = "model.layers.0.mlp.up_proj.weight",
        LayerGroup = "model.layers.0",
        Shape = [n],
        HasBase = true,
        ModelNames = [.. weights.Select((_, i) => $"expert{i}")],
        Weights = weights,
        Parameters = Parameters(strategy, weights, global, perModel),
        Seed = seed,
        LayerIndex = 0,
        LayerCount = 1,
    };

    /// <summary>The request for one block of the tensor <paramref name="info"/> starting at element <paramref name="start"/>.</summary>
    public static MergeTensorRequest Block(
        Tensor baseBlock, Tensor[] models, Tensor output, ITensorScratch scratch, double[] weights, MergeTensorInfo info, long start)
    {
        ArgumentNullException.ThrowIfNull(info);
        return new()
        {
            TensorName = info.TensorName,
            LayerGroup = info.LayerGroup,
            Base = baseBlock,
            Models = models,
            ModelNames = info.ModelNames,
            Weights = weights,
            Parameters = info.Parameters,
            Output = output,
            Scratch = scratch,
            Seed = info.Seed,
            TensorSeed = info.Seed,
            LayerIndex = info.LayerIndex,
            LayerCount = info.LayerCount,
            ElementStart = start,
        };
    }

    /// <summary>
    /// What a host hands the strategy for these values: its declared defaults, kinds and ranges applied; a declared
    /// <c>weight</c> is each model's entry of <paramref name="weights"/> (the host resolves it once for both places).
    /// </summary>
    public static ResolvedParameters Parameters(IMergeStrategy strategy, double[] weights, Dictionary<string, object>? global, Dictionary<string, object>[]? perModel)
    {
        var declaresWeight = strategy.Parameters.Any(p => p.Name == "weight");
        var models = weights.Select((weight, i) =>
        {
            var values = new Dictionary<string, object>(perModel?[i] ?? [], StringComparer.Ordinal);
            if (declaresWeight)
            {
                values.TryAdd("weight", weight);
            }
            return (IReadOnlyDictionary<string, object>)values;
        }).ToList();
        return ParameterResolver.ResolveDirect(strategy, weights.Length, global, models);
    }

    /// <summary>
    /// A tensor with the given values; with <paramref name="columnMajor"/> the same logical values in a non-contiguous
    /// layout, which sends strategies down their general libtorch path instead of the fused CPU kernel.
    /// </summary>
    private static Tensor Input(float[] values, long[] shape, bool columnMajor)
    {
        using var logical = torch.tensor(values).reshape(shape);
        if (!columnMajor)
        {
            return logical.clone();
        }
        Assert.True(shape.Length == 2 && shape[0] > 1 && shape[1] > 1, "the libtorch path needs a 2-D shape to transpose");
        using var transposed = logical.t().contiguous();
        var result = transposed.t();
        Assert.False(result.is_contiguous());
        return result;
    }

    public static void Close(double[] expected, float[] actual, double tolerance = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs(expected[i] - actual[i]);
            Assert.True(diff <= tolerance * Math.Max(1.0, Math.Abs(expected[i])),
                $"element {i}: expected {expected[i]}, got {actual[i]} (diff {diff})");
        }
    }

    public static float[] Random(Random rng, int n, double scale = 1.0, double offset = 0.0) =>
        [.. Enumerable.Range(0, n).Select(_ => (float)(offset + scale * (rng.NextDouble() * 2 - 1)))];
}
