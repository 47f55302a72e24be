using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Decorators.Sens;
using SensMerging.Scorers;
using SensMerging.Strategies.Linear;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Plugins.Tests;

public sealed class ScorerTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] ModelOrder = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"];
    private readonly TempFolder _folder = new();
    private readonly TinyRuntime _runtime = new();

    public void Dispose() => _folder.Dispose();

    private string Model(string name, int seed, params string[] zero) =>
        TinyModelFiles.Write(_folder.Sub(name), TinyModelFiles.Random(seed, 8, zero));

    private ScoringContext Context(IScorer scorer, IReadOnlyList<ScoredModel> models, IReadOnlyDictionary<string, object>? values = null) => new()
    {
        Models = models,
        Runtime = _runtime,
        Parameters = TestScorerCatalog.Resolve(scorer.Parameters, values),
        Logger = NullLogger.Instance,
    };

    /// <summary>Per group, mean over samples of a per-sample statistic of (weight, gradient), with gradients from torch.autograd.grad.</summary>
    private static double[] Direct(string path, IReadOnlyList<TextSample> samples, int maxLength, Func<Tensor, Tensor, Tensor> statistic)
    {
        using var model = TinyLanguageModel.Load(path, new ModelLoadOptions(RequiresGrad: true));
        var sums = new double[ModelOrder.Length];
        foreach (var sample in samples)
        {
            using var scope = NewDisposeScope();
            var loss = model.Loss(model.Tokenizer.Encode(sample, maxLength));
            var weights = model.NamedWeights.Select(w => w.Weight).ToArray();
            var grads = autograd.grad([loss], weights, allow_unused: true);
            for (var k = 0; k < weights.Length; k++)
            {
                var group = Array.IndexOf(ModelOrder, LayerGroups.Of(model.NamedWeights[k].Name));
                sums[group] += statistic(weights[k].detach(), grads[k]).to_type(ScalarType.Float64).sum().item<double>();
            }
        }
        return sums.Select(s => s / samples.Count).ToArray();
    }

    [Fact]
    public async Task Sensitivity_IsMeanOverSamplesOfPerSampleAbsWeightTimesGradient()
    {
        var experts = new[]
        {
            new ScoredModel("math", Model("math", 1), Data.Set("math", Data.Math)),
            new ScoredModel("code", Model("code", 2), Data.Set("code", Data.Code)),
        };
        var scorer = new SensitivityScorer();
        var table = await scorer.ScoreAsync(Context(scorer, experts, new Dictionary<string, object> { ["samples"] = 5L, ["max_length"] = 24L }), CancellationToken.None);

        Assert.Equal(ScorerKind.TaskSpecific, table.Kind);
        Assert.Equal(["math", "code"], table.Rows);
        Assert.Equal(ModelOrder, table.Columns);
        Assert.Equal(10, table.Details["samples"]);
        Assert.True(table.Details["tokens"] > 0);
        for (var i = 0; i < 2; i++)
        {
            var expected = Direct(experts[i].ModelPath, experts[i].Data!.Samples.Take(5).ToArray(), 24, (w, g) => (w * g).abs());
            Assert.Equal(expected, table.Values[i], new Tolerance(1e-9));
            Assert.All(table.Values[i], v => Assert.True(v > 0));
        }
        // The absolute value is taken per sample: the mean of |theta*g| is not |theta * mean g| here.
        var ofMeanGradient = Direct(experts[0].ModelPath, experts[0].Data!.Samples.Take(5).ToArray(), 24, (w, g) => w * g).Select(Math.Abs).ToArray();
        Assert.Contains(Enumerable.Range(0, ModelOrder.Length), l => table.Values[0][l] > ofMeanGradient[l] * 1.01);
    }

    [Fact]
    public async Task Statistics_ReducedInChunks_EqualTheWholeTensorReduction()
    {
        // Weights larger than the scratch buffer are reduced piece by piece; 7-element pieces split every weight here.
        var experts = new[] { new ScoredModel("math", Model("math", 4), Data.Set("math", Data.Math)) };
        var values = new Dictionary<string, object> { ["samples"] = 3L, ["max_length"] = 24L };
        var whole = new List<double[]>();
        var chunked = new List<double[]>();
        foreach (IScorer scorer in new IScorer[] { new SensitivityScorer(), new FisherScorer() })
        {
            whole.Add((await scorer.ScoreAsync(Context(scorer, experts, values), CancellationToken.None)).Values[0]);
            var saved = GradientScoring.ChunkElements;
            GradientScoring.ChunkElements = 7;
            try
            {
                chunked.Add((await scorer.ScoreAsync(Context(scorer, experts, values), CancellationToken.None)).Values[0]);
            }
            finally
            {
                GradientScoring.ChunkElements = saved;
            }
        }
        for (var i = 0; i < whole.Count; i++)
        {
            Assert.All(whole[i], v => Assert.True(v > 0));
            Assert.Equal(whole[i], chunked[i], new Tolerance(1e-12 * whole[i].Max()));
        }
    }

    [Fact]
    public async Task Sensitivity_OfALayerWithZeroWeights_IsZero()
    {
        var experts = new[] { new ScoredModel("math", Model("zero1", 3, "model.layers.1.mlp.weight"), Data.Set("math", Data.Math)) };
        var scorer = new SensitivityScorer();
        var table = await scorer.ScoreAsync(Context(scorer, experts, new Dictionary<string, object> { ["samples"] = 4L }), CancellationToken.None);
        Assert.Equal(0.0, table[0, 2]);
        Assert.True(table[0, 0] > 0 && table[0, 1] > 0 && table[0, 3] > 0 && table[0, 4] > 0);
    }

    [Fact]
    public async Task Fisher_IsNonNegativeMeanSquaredGradient_AndZeroWhereTheGradientIsZero()
    {
        // lm_head = 0: the logits do not depend on anything below it, so every other group's gradient is 0.
        var experts = new[]
        {
            new ScoredModel("flat", Model("flat", 4, "lm_head.weight"), Data.Set("chat", Data.Chat)),
            new ScoredModel("chat", Model("chat", 5), Data.Set("chat", Data.Chat)),
        };
        var scorer = new FisherScorer();
        var table = await scorer.ScoreAsync(Context(scorer, experts, new Dictionary<string, object> { ["samples"] = 3L }), CancellationToken.None);
        Assert.Equal([0.0, 0.0, 0.0, 0.0], table.Values[0].Take(4));
        Assert.True(table[0, 4] > 0);
        Assert.All(table.Values.SelectMany(r => r), v => Assert.True(v >= 0));
        var expected = Direct(experts[1].ModelPath, Data.Chat.Take(3).Select(t => new TextSample(t)).ToArray(), 64, (w, g) => g * g);
        Assert.Equal(expected, table.Values[1], new Tolerance(1e-9));
    }

    [Fact]
    public async Task Scorers_ExpertWithoutCalibrationData_FailNamingTheExpert()
    {
        var experts = new[]
        {
            new ScoredModel("math", Model("m", 1), Data.Set("math", Data.Math)),
            new ScoredModel("orphan", Model("o", 2), null),
        };
        foreach (var scorer in new IScorer[] { new SensitivityScorer(), new FisherScorer(), new LogitAlignmentScorer() })
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => scorer.ScoreAsync(Context(scorer, experts), CancellationToken.None));
            Assert.Contains("'orphan'", error.Message, StringComparison.Ordinal);
            Assert.Contains(scorer.Name, error.Message, StringComparison.Ordinal);
        }
        Assert.Equal(0, _runtime.Loads); // checked before any model is loaded
        var empty = new[] { new ScoredModel("empty", Model("e", 3), Data.Set("empty", [])) };
        var scorer2 = new SensitivityScorer();
        var emptyError = await Assert.ThrowsAsync<InvalidOperationException>(() => scorer2.ScoreAsync(Context(scorer2, empty), CancellationToken.None));
        Assert.Contains("'empty'", emptyError.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sensitivity_WithoutGradients_FailsClearly()
    {
        var experts = new[] { new ScoredModel("math", Model("nograd", 1), Data.Set("math", Data.Math)) };
        var scorer = new SensitivityScorer();
        var context = Context(scorer, experts) with { Runtime = new TinyRuntime { IgnoreRequiresGrad = true } };
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => scorer.ScoreAsync(context, CancellationToken.None));
        Assert.Contains("not differentiable", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LogitAlignment_OfIdenticalModels_IsZero_AndGivesEqualTau()
    {
        var path = Model("same", 7);
        var copy = Model("same-copy", 7);
        var experts = new[]
        {
            new ScoredModel("a", path, Data.Set("math", Data.Math)),
            new ScoredModel("b", copy, Data.Set("code", Data.Code)),
            new ScoredModel("c", path, Data.Set("chat", Data.Chat)),
        };
        var scorer = new LogitAlignmentScorer();
        var table = await scorer.ScoreAsync(Context(scorer, experts, new Dictionary<string, object> { ["samples"] = 3L }), CancellationToken.None);
        Assert.Equal(ScorerKind.CrossTask, table.Kind);
        Assert.Equal(["math", "code", "chat"], table.Columns);
        Assert.All(table.Values.SelectMany(r => r), g => Assert.Equal(0.0, g));
        Assert.Equal(6, _runtime.Loads); // 2K loads: one forward model at a time
        foreach (var reading in new[] { TransferReading.Alignment, TransferReading.Distance })
        {
            Assert.All(SensMath.Tau(SensMath.Transferability(table.Values, reading)), t => Assert.Equal(1.0 / 3, t));
        }
    }

    [Fact]
    public async Task LogitAlignment_MatchesDirectComputation_InMemoryAndSpilled()
    {
        var experts = new[]
        {
            new ScoredModel("math", Model("lm", 11), Data.Set("math", Data.Math)),
            new ScoredModel("code", Model("lc", 12), Data.Set("code", Data.Code)),
            new ScoredModel("chat", Model("lh", 13), Data.Set("chat", Data.Chat.Select(t => t).ToArray()) with
            {
                Samples = Data.Chat.Select(t => new TextSample(t[..4], t[4..])).ToArray(),
            }),
        };
        var scorer = new LogitAlignmentScorer();
        var values = new Dictionary<string, object> { ["samples"] = 4L, ["max_length"] = 20L };
        var inMemory = await scorer.ScoreAsync(Context(scorer, experts, values), CancellationToken.None);
        values["reference_memory_mb"] = 0L;
        var spilled = await scorer.ScoreAsync(Context(scorer, experts, values), CancellationToken.None);
        Assert.Equal(0, inMemory.Details["reference_bytes_spilled"]);
        Assert.True(spilled.Details["reference_bytes_spilled"] > 0);
        Assert.Equal(inMemory.Values, spilled.Values);
        output.WriteLine($"logit_alignment: {inMemory.Details["seconds"]:F2} s in memory, {spilled.Details["seconds"]:F2} s spilled");
        var watch = System.Diagnostics.Stopwatch.StartNew();

        // Direct: g_ij = mean over D_j of the mean over compared tokens of ||z_i - z_j||_2, in plain loops.
        var models = experts.Select(e => TinyLanguageModel.Load(e.ModelPath, new ModelLoadOptions())).ToArray();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal(0.0, inMemory[i, i]);
                for (var j = 0; j < 3; j++)
                {
                    if (i == j)
                    {
                        continue;
                    }
                    double total = 0;
                    var samples = experts[j].Data!.Samples.Take(4).ToArray();
                    foreach (var sample in samples)
                    {
                        using var scope = NewDisposeScope();
                        var encoded = models[j].Tokenizer.Encode(sample, 20);
                        var ids = tensor(encoded.Ids, dtype: ScalarType.Int64).unsqueeze(0);
                        var zi = models[i].Forward(ids)[0].contiguous().data<float>().ToArray();
                        var zj = models[j].Forward(ids)[0].contiguous().data<float>().ToArray();
                        var v = CharTokenizer.Size;
                        var positions = Enumerable.Range(0, encoded.Length - 1).Where(t => encoded.LossMask[t]).ToArray();
                        if (sample.Response is not null)
                        {
                            Assert.True(positions.Length < encoded.Length - 1); // response tokens only
                        }
                        double perToken = 0;
                        foreach (var t in positions)
                        {
                            double squares = 0;
                            for (var x = 0; x < v; x++)
                            {
                                var d = (double)zi[t * v + x] - zj[t * v + x];
                                squares += d * d;
                            }
                            perToken += Math.Sqrt(squares);
                        }
                        total += perToken / positions.Length;
                    }
                    var expected = total / samples.Length;
                    Assert.True(expected > 0);
                    Assert.Equal(expected, inMemory[i, j], expected * 1e-5);
                }
            }
        }
        finally
        {
            output.WriteLine($"direct computation: {watch.Elapsed.TotalSeconds:F2} s");
            foreach (var m in models)
            {
                m.Dispose();
            }
        }
    }

    [Fact]
    public async Task SensOverLinear_WithRealScorersOnTinyModels_AppliesTheReportedCoefficients()
    {
        var experts = new[]
        {
            // As the host loads calibration blocks {samples: 3, max_length: 32}.
            new ScoredModel("math", Model("em", 21), Data.Set("math", Data.Math.Take(3), maxLength: 32)),
            new ScoredModel("code", Model("ec", 22), Data.Set("code", Data.Code.Take(3), maxLength: 32)),
        };
        var catalog = new TestScorerCatalog(new SensitivityScorer(), new LogitAlignmentScorer(), new FisherScorer());
        var context = new DecoratorContext
        {
            Experts = experts,
            LayerGroups = ModelOrder,
            Parameters = TestScorerCatalog.Resolve(new SensDecorator().Parameters, new Dictionary<string, object> { ["temperature"] = 0.05 }),
            Scorers = catalog,
            Runtime = _runtime,
            Logger = NullLogger.Instance,
        };
        var linear = new LinearStrategy();
        var decorated = await new SensDecorator().DecorateAsync(linear, context, CancellationToken.None);
        Assert.Equal("sens(linear)", decorated.Name);
        var coefficients = decorated.Report.Tables.Single(t => t.Scorer == "coefficients");
        Assert.Equal(ModelOrder, coefficients.Columns);

        var loaded = experts.Select(e => TinyModelFiles.Read(e.ModelPath)).ToArray();
        var parameters = TestScorerCatalog.Resolve(linear.Parameters);
        for (var k = 0; k < loaded[0].Count; k++)
        {
            var name = loaded[0][k].Name;
            var group = LayerGroups.Of(name);
            var l = coefficients.Columns.ToList().IndexOf(group);
            using var a = tensor(loaded[0][k].Data, loaded[0][k].Shape);
            using var b = tensor(loaded[1][k].Data, loaded[1][k].Shape);
            using var output = empty(a.shape);
            using var scratch = new TestScratch(a.shape);
            decorated.Merge(new MergeTensorRequest
            {
                TensorName = name,
                LayerGroup = group,
                Models = [a, b],
                ModelNames = ["math", "code"],
                Weights = [1.0, 1.0],
                Parameters = parameters,
                Output = output,
                Scratch = scratch,
            });
            var ca = coefficients[0, l];
            var cb = coefficients[1, l];
            var merged = output.data<float>().ToArray();
            for (var x = 0; x < merged.Length; x++)
            {
                var expected = (ca * loaded[0][k].Data[x] + cb * loaded[1][k].Data[x]) / (ca + cb);
                Assert.Equal(expected, merged[x], 1e-5);
            }
            Assert.Equal(2.0, ca + cb, 12);
        }
    }

    [Fact]
    public void ComparedPositions_AreTheResponseForPromptResponseSamples_AndAllPredictingPositionsForText()
    {
        var tokenizer = new CharTokenizer();
        var text = tokenizer.Encode(new TextSample("abcd"), 64);
        Assert.Equal([0L, 1, 2, 3], LogitAlignmentScorer.ComparedPositions(text));
        var pair = tokenizer.Encode(new TextSample("ab", "cd"), 64);
        Assert.Equal([2L, 3], LogitAlignmentScorer.ComparedPositions(pair));
    }
}
