using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Strategies.Common;

namespace SensMerging.Core.Tests;

/// <summary>
/// Problems in the input data are not passed over in silence: NaN/Inf values are counted per tensor and model as the
/// engine reads them (each element once, whatever the read path and however often a streamed strategy reads a block),
/// tensors an expert has and the base lacks are listed; with <see cref="MergeOptions.Strict"/> either stops the merge.
/// </summary>
public sealed class InputDataTests : IDisposable
{
    private const string UpProj = "model.layers.0.mlp.up_proj.weight"; // 96 elements
    private const string Norm = "model.norm.weight"; // 8 elements

    private readonly SafeTensorsTempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Expert e1: 3 NaN and 2 infinite values (one negative) in up_proj, at the start, middle and end; base: 1 NaN in norm.</summary>
    private static void PoisonExpert(string tensor, float[] values)
    {
        if (tensor == UpProj)
        {
            values[0] = float.NaN;
            values[37] = -float.NaN;
            values[95] = BitConverter.Int32BitsToSingle(0x7F80_0001); // a NaN with the smallest payload
            values[50] = float.PositiveInfinity;
            values[90] = float.NegativeInfinity;
            values[60] = 60000f; // large but finite in every dtype: not counted
        }
    }

    private static void PoisonBase(string tensor, float[] values)
    {
        if (tensor == Norm)
        {
            values[7] = float.NaN;
        }
    }

    private MergePlan Plan(string tag, SafeTensorsDType dtype, IMergeStrategy strategy, bool poisoned = true, (string Name, long[] Shape)[]? expertTensors = null) => new()
    {
        Base = _dir.Input("base", TinyModels.Make(_dir.File("base" + tag), 1, dtype, edit: poisoned ? PoisonBase : null).Path),
        Models =
        [
            _dir.Input("e1", TinyModels.Make(_dir.File("e1" + tag), 2, dtype, tensors: expertTensors, edit: poisoned ? PoisonExpert : null).Path),
            _dir.Input("e2", TinyModels.Make(_dir.File("e2" + tag), 3, dtype).Path),
        ],
        Strategy = strategy,
        ParameterResolver = (_, _) => strategy is GeneralizedTaskArithmeticStrategy
            ? ParameterResolver.ResolveDirect(strategy, 2,
                new Dictionary<string, object> { ["lambda"] = 1.0 },
                [new Dictionary<string, object> { ["density"] = 0.5 }, new Dictionary<string, object> { ["density"] = 0.5 }])
            : ParameterResolver.ResolveDirect(strategy, 2),
        Weights = [0.5, 0.5],
    };

    private static IMergeStrategy Strategy(string name) => name switch
    {
        "weighted_sum" => new WeightedSumStrategy(),
        "whole_tensor" => new WeightedSumStrategy(elementwise: false),
        "dare_ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.DareTies),
        "ties" => new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [InlineData("weighted_sum", "F32", 5)] // F32 read straight into the compute buffer; blocks shorter than a vector
    [InlineData("weighted_sum", "F32", 1 << 18)]
    [InlineData("weighted_sum", "BF16", 7)] // BF16 read through the staging buffer and widened
    [InlineData("weighted_sum", "F16", 1 << 18)] // F16 read raw and converted
    [InlineData("whole_tensor", "F32", 1 << 18)]
    [InlineData("dare_ties", "BF16", 1 << 18)] // BF16 handed to the strategy as stored
    [InlineData("ties", "F32", 16)] // streamed: statistics passes read every block again
    [InlineData("ties", "BF16", 16)]
    public void NaN_and_Inf_in_inputs_are_counted_once_per_tensor_and_model(string strategy, string dtypeName, int blockElements)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var result = new MergeEngine().Run(Plan("n", dtype, Strategy(strategy)), new MergeOptions
        {
            OutputPath = _dir.File("out"),
            MaxParallelism = 2,
            BlockElements = blockElements,
        });

        Assert.Equal(2, result.Warnings.Count);
        var expert = result.Warnings.Single(w => w.Model == "e1");
        Assert.Equal(MergeDataProblem.NonFinite, expert.Problem);
        Assert.Equal([UpProj], expert.Tensors);
        Assert.Equal((3L, 2L), (expert.NanCount, expert.InfCount));
        Assert.Contains($"'{UpProj}' of model 'e1' holds 3 NaN and 2 infinite", expert.Message, StringComparison.Ordinal);
        var baseWarning = result.Warnings.Single(w => w.Model == "base");
        Assert.Equal([Norm], baseWarning.Tensors);
        Assert.Equal((1L, 0L), (baseWarning.NanCount, baseWarning.InfCount));
        // In tensor order: up_proj (layer 0) comes before the final norm.
        Assert.Equal(["e1", "base"], result.Warnings.Select(w => w.Model));
        Assert.True(Directory.Exists(result.OutputPath), "without strict checks the merge completes");
    }

    [Fact]
    public void The_counter_tells_NaN_from_Inf_in_every_lane_and_in_the_tail()
    {
        float[] special = [float.NaN, -float.NaN, BitConverter.Int32BitsToSingle(0x7F80_0001), BitConverter.Int32BitsToSingle(0x7FBF_FFFF), float.PositiveInfinity, float.NegativeInfinity];
        float[] finite = [0f, -0f, float.MaxValue, float.MinValue, float.Epsilon, 1e-40f, 1f];
        var random = new Random(5);
        for (var length = 0; length <= 70; length++)
        {
            var values = Enumerable.Range(0, length).Select(_ => finite[random.Next(finite.Length)]).ToArray();
            var marks = length == 0 ? 0 : random.Next(Math.Min(4, length) + 1);
            foreach (var at in Enumerable.Range(0, length).OrderBy(_ => random.Next()).Take(marks))
            {
                values[at] = special[random.Next(special.Length)];
            }
            var expected = (values.LongCount(float.IsNaN), values.LongCount(float.IsInfinity));
            Assert.Equal(expected, NonFiniteCount.Float32(values));
            // The same values as bfloat16 (NaN payloads that do not survive the cut are made quiet NaNs).
            var bf16 = values.Select(v => float.IsNaN(v) ? (ushort)0x7FC0 : (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
            var widened = bf16.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray();
            Assert.Equal((widened.LongCount(float.IsNaN), widened.LongCount(float.IsInfinity)), NonFiniteCount.BFloat16(bf16));
        }
    }

    [Fact]
    public void Clean_inputs_give_no_warnings()
    {
        var result = new MergeEngine().Run(Plan("c", SafeTensorsDType.F32, new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties), poisoned: false), new MergeOptions { OutputPath = _dir.File("out"), BlockElements = 16 });
        Assert.Empty(result.Warnings);
    }

    [Theory]
    [InlineData("weighted_sum", "F32")]
    [InlineData("ties", "BF16")]
    public void Strict_stops_at_NaN_or_Inf_and_writes_nothing(string strategy, string dtypeName)
    {
        var dtype = SafeTensorsDType.FromHeaderName(dtypeName)!;
        var output = _dir.File("strict-out");

        var ex = Assert.Throws<MergeDataException>(() => new MergeEngine().Run(Plan("s", dtype, Strategy(strategy)), new MergeOptions
        {
            OutputPath = output,
            MaxParallelism = 2,
            BlockElements = 16,
            Strict = true,
        }));

        var warning = Assert.Single(ex.Warnings);
        Assert.Equal(MergeDataProblem.NonFinite, warning.Problem);
        Assert.Contains(warning.Model, new[] { "e1", "base" });
        Assert.Contains("strict", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"of model '{warning.Model}' holds", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(output));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "strict-out*"));
    }

    [Fact]
    public void Tensors_the_base_lacks_are_listed_and_strict_refuses_them_before_writing()
    {
        (string Name, long[] Shape)[] withExtras = [.. TinyModels.Llama, ("model.layers.0.mlp.up_proj.bias", [12]), ("score.weight", [2, 8])];

        var result = new MergeEngine().Run(Plan("x", SafeTensorsDType.F32, new WeightedSumStrategy(), poisoned: false, withExtras), new MergeOptions { OutputPath = _dir.File("extra-out") });

        var warning = Assert.Single(result.Warnings);
        Assert.Equal(MergeDataProblem.ExtraTensors, warning.Problem);
        Assert.Equal("e1", warning.Model);
        Assert.Equal(["model.layers.0.mlp.up_proj.bias", "score.weight"], warning.Tensors);
        Assert.Contains("model 'e1' has 2 tensor(s) that 'base' lacks, not merged: model.layers.0.mlp.up_proj.bias, score.weight", warning.Message, StringComparison.Ordinal);
        using (var merged = ModelFolder.Open(result.OutputPath))
        {
            Assert.False(merged.TryGetTensor("score.weight", out _));
        }

        var output = _dir.File("extra-strict");
        var ex = Assert.Throws<MergeDataException>(() => new MergeEngine().Run(
            Plan("y", SafeTensorsDType.F32, new WeightedSumStrategy(), poisoned: false, withExtras), new MergeOptions { OutputPath = output, Strict = true }));
        Assert.Contains("score.weight", ex.Message, StringComparison.Ordinal);
        Assert.Equal(MergeDataProblem.ExtraTensors, Assert.Single(ex.Warnings).Problem);
        Assert.False(Directory.Exists(output));
        Assert.Empty(Directory.GetDirectories(_dir.Path, "extra-strict*"));
    }
}
