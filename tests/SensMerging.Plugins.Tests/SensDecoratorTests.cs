using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Decorators.Sens;
using SensMerging.Strategies.Common;
using SensMerging.Strategies.Linear;
using static TorchSharp.torch;

namespace SensMerging.Plugins.Tests;

public sealed class SensDecoratorTests
{
    private static readonly string[] Groups = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"];
    private static readonly string[] Experts = ["math", "code", "chat"];

    private static ScoredModel[] ExpertModels(bool withData = true) =>
        Experts.Select(e => new ScoredModel(e, "/models/" + e, withData ? Data.Set(e, Data.Math) : null)).ToArray();

    private static FixedScorer TaskScorer(double[][] values, string name = "sensitivity") =>
        new(name, ScorerKind.TaskSpecific, models => new ScoreTable(name, ScorerKind.TaskSpecific, models.Select(m => m.Name).ToArray(), Groups, values)
        {
            Details = new Dictionary<string, double> { ["samples"] = 3 },
        });

    private static FixedScorer CrossScorer(double[][] values) =>
        new("logit_alignment", ScorerKind.CrossTask, models => new ScoreTable("logit_alignment", ScorerKind.CrossTask, models.Select(m => m.Name).ToArray(), models.Select(m => m.Name).ToArray(), values));

    private static readonly double[][] HandS =
    [
        [0.5, 2.0, 1.0, 0.25, 3.0],
        [1.5, 0.5, 0.5, 1.0, 0.1],
        [3.0, 1.0, 2.0, 0.5, 1.0],
    ];

    private static readonly double[][] HandG = [[0, 2, 4], [1, 0, 3], [6, 5, 0]];

    private static DecoratorContext Context(IScorerCatalog catalog, IReadOnlyDictionary<string, object>? parameters = null, ScoredModel[]? experts = null, IModelRuntime? runtime = null) => new()
    {
        Experts = experts ?? ExpertModels(),
        LayerGroups = Groups,
        Parameters = TestScorerCatalog.Resolve(new SensDecorator().Parameters, parameters),
        Scorers = catalog,
        Runtime = runtime ?? new TinyRuntime(),
        Logger = NullLogger.Instance,
    };

    private static Tensor[] RandomTensors(int count, int seed, params long[] shape)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (var i = 0; i < data.Length; i++)
            {
                data[i] = (float)(rng.NextDouble() * 2 - 1);
            }
            return tensor(data, shape);
        }).ToArray();
    }

    private static Tensor Merge(IMergeStrategy strategy, string tensorName, Tensor? @base, Tensor[] models, double[] weights, ResolvedParameters parameters)
    {
        var output = empty(models[0].shape);
        using var scratch = new TestScratch(models[0].shape);
        strategy.Merge(new MergeTensorRequest
        {
            TensorName = tensorName,
            LayerGroup = LayerGroups.Of(tensorName),
            Base = @base,
            Models = models,
            ModelNames = Experts,
            Weights = weights,
            Parameters = parameters,
            Output = output,
            Scratch = scratch,
        });
        return output;
    }

    [Fact]
    public async Task UniformScores_SensOfInnerEqualsInnerExactly()
    {
        double[][] uniformS = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]];
        double[][] uniformG = [[0, 7, 7], [7, 0, 7], [7, 7, 0]];
        var catalog = new TestScorerCatalog(TaskScorer(uniformS), CrossScorer(uniformG));
        var weights = new[] { 0.7, 1.3, 0.4 };
        foreach (var inner in new IMergeStrategy[] { new TestTaskArithmetic(), new LinearStrategy(), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic), new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties) })
        {
            var decorated = await new SensDecorator().DecorateAsync(inner, Context(catalog), CancellationToken.None);
            var parameters = TestScorerCatalog.Resolve(inner.Parameters);
            foreach (var name in new[] { "model.layers.1.mlp.up_proj.weight", "lm_head.weight", "model.embed_tokens.weight" })
            {
                var models = RandomTensors(3, name.Length, 6, 5);
                using var @base = RandomTensors(1, 99, 6, 5)[0];
                using var plain = Merge(inner, name, @base, models, weights, parameters);
                using var steered = Merge(decorated, name, @base, models, weights, parameters);
                Assert.True(plain.eq(steered).all().item<bool>(), $"{inner.Name} on {name}: sens with uniform scores changed the result");
                foreach (var m in models)
                {
                    m.Dispose();
                }
            }
        }
    }

    [Fact]
    public async Task SensTaskArithmeticPlugin_MergesWithScaledWeights()
    {
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var inner = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.TaskArithmetic);
        var decorated = await new SensDecorator().DecorateAsync(inner, Context(catalog, new Dictionary<string, object> { ["temperature"] = 0.1 }), CancellationToken.None);
        var c = decorated.Report.Tables.Single(t => t.Scorer == "coefficients");
        var parameters = TestScorerCatalog.Resolve(inner.Parameters);
        var weights = new[] { 1.0, 0.5, 0.25 };
        var models = RandomTensors(3, 17, 3, 4);
        using var @base = RandomTensors(1, 18, 3, 4)[0];
        const string name = "model.layers.1.self_attn.q_proj.weight";
        using var steered = Merge(decorated, name, @base, models, weights, parameters);
        // Same inner strategy, the scaled weights passed by hand.
        var scaled = Enumerable.Range(0, 3).Select(i => weights[i] * c[i, 2]).ToArray();
        using var byHand = Merge(inner, name, @base, models, scaled, parameters);
        using var unscaled = Merge(inner, name, @base, models, weights, parameters);
        Assert.True(steered.eq(byHand).all().item<bool>());
        Assert.False(steered.allclose(unscaled, rtol: 1e-6, atol: 1e-7));
        foreach (var m in models)
        {
            m.Dispose();
        }
    }

    [Fact]
    public async Task SensOfAStreamingStrategy_StreamsInBlocks_ToTheWholeTensorResult()
    {
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var inner = new GeneralizedTaskArithmeticStrategy(TaskArithmeticVariant.Ties);
        var decorated = await new SensDecorator().DecorateAsync(inner, Context(catalog, new Dictionary<string, object> { ["temperature"] = 0.1 }), CancellationToken.None);
        var streaming = Assert.IsAssignableFrom<IStreamingMergeStrategy>(decorated);
        Assert.IsNotAssignableFrom<IStreamingMergeStrategy>(
            await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog), CancellationToken.None));

        var parameters = TestScorerCatalog.Resolve(inner.Parameters, new Dictionary<string, object> { ["density"] = 0.5 });
        var weights = new[] { 1.0, 0.5, 0.25 };
        var models = RandomTensors(3, 21, 6, 5);
        using var @base = RandomTensors(1, 22, 6, 5)[0];
        const string name = "model.layers.0.mlp.up_proj.weight";
        using var whole = Merge(decorated, name, @base, models, weights, parameters);

        // The block protocol: statistics passes over 2-row blocks, then the merge pass, as a host drives it.
        var info = new MergeTensorInfo
        {
            TensorName = name, LayerGroup = LayerGroups.Of(name), Shape = [6, 5], HasBase = true, ModelNames = Experts, Weights = weights, Parameters = parameters,
        };
        using var streamed = zeros(6, 5);
        using var scratch = new TestScratch([2, 5]);
        using (var session = streaming.BeginTensor(info))
        {
            MergeTensorRequest Block(int row, Tensor output) => new()
            {
                TensorName = name, LayerGroup = info.LayerGroup, Base = @base[row..(row + 2)], Models = [.. models.Select(m => m[row..(row + 2)])],
                ModelNames = Experts, Weights = weights, Parameters = parameters, Output = output, Scratch = scratch, ElementStart = row * 5L,
            };
            for (var pass = 0; session.BeginPass(pass); pass++)
            {
                for (var row = 0; row < 6; row += 2)
                {
                    using var ignored = zeros(2, 5);
                    session.Observe(Block(row, ignored));
                }
            }
            for (var row = 0; row < 6; row += 2)
            {
                using var output = zeros(2, 5);
                session.Merge(Block(row, output));
                streamed[row..(row + 2)].copy_(output);
            }
        }
        Assert.True(whole.eq(streamed).all().item<bool>());
        foreach (var m in models)
        {
            m.Dispose();
        }
    }

    [Fact]
    public async Task AppliedWeights_EqualConfiguredTimesCoefficient_RecomputedFromReport()
    {
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var recorder = new RecordingStrategy(new LinearStrategy());
        var parameters = new Dictionary<string, object> { ["temperature"] = 0.2, ["alignment"] = "distance" };
        var decorated = await new SensDecorator().DecorateAsync(recorder, Context(catalog, parameters), CancellationToken.None);
        var report = decorated.Report;
        var weights = new[] { 1.0, 0.5, 2.0 };
        var linearParameters = TestScorerCatalog.Resolve(recorder.Parameters);
        foreach (var group in Groups)
        {
            var name = group + ".weight";
            var models = RandomTensors(3, 5, 4, 4);
            using var output = Merge(decorated, name, null, models, weights, linearParameters);
            foreach (var m in models)
            {
                m.Dispose();
            }
        }

        // Recompute from the report alone: alpha and tau tables, temperature setting, naive softmax.
        var alpha = report.Tables.Single(t => t.Scorer == "alpha");
        var tau = report.Tables.Single(t => t.Scorer == "tau").Values[0];
        var temperature = (double)report.Settings["temperature"];
        Assert.Equal(0.2, temperature);
        Assert.Equal("distance", report.Settings["alignment"]);
        Assert.Equal(Groups.Length, recorder.Calls.Count);
        foreach (var (group, applied) in recorder.Calls)
        {
            var l = alpha.Columns.ToList().IndexOf(group);
            var exps = Enumerable.Range(0, 3).Select(i => Math.Exp(alpha[i, l] * tau[i] / temperature)).ToArray();
            for (var i = 0; i < 3; i++)
            {
                var c = 3 * exps[i] / exps.Sum();
                Assert.Equal(weights[i] * c, applied[i], 12);
            }
        }

        // And alpha, tau themselves follow from the reported S and g.
        var s = report.Tables.Single(t => t.Scorer == "S");
        var g = report.Tables.Single(t => t.Scorer == "g");
        Assert.Equal(HandS, s.Values);
        Assert.Equal(HandG, g.Values);
        var recomputed = SensMath.Compute(s.Values, g.Values, 3, s.Columns.Count, TransferReading.Distance, temperature);
        Assert.Equal(recomputed.Coefficients, report.Tables.Single(t => t.Scorer == "coefficients").Values);
        Assert.Equal(recomputed.Sigma, report.Tables.Single(t => t.Scorer == "sigma").Values);
        Assert.Equal(recomputed.Transferability, report.Tables.Single(t => t.Scorer == "t").Values[0]);
        // The steering is real: coefficients differ across experts.
        Assert.Contains(recorder.Calls, c => Math.Abs(c.Weights[0] / weights[0] - c.Weights[1] / weights[1]) > 0.01);
    }

    [Fact]
    public async Task SettingsPerLayerGroup_GiveEachGroupItsOwnSoftmax_RecomputedByHand()
    {
        // Contract 1.6: the host resolves temperature, task_scaling and cross_scaling per layer group (a gradient or a
        // filter list in the config). Here: T rising over the groups, no task scaling in lm_head, no cross scaling in the
        // final norm. Expected values from the paper's formulas written out below, not from SensMath.
        double[] temperatures = [0.1, 0.2, 0.3, 0.4, 0.5];
        var perGroup = Groups.Select((g, l) => TestScorerCatalog.Resolve(new SensDecorator().Parameters, new Dictionary<string, object>
        {
            ["temperature"] = temperatures[l],
            ["alignment"] = "distance",
            ["task_scaling"] = g != "lm_head",
            ["cross_scaling"] = g != "model.norm",
        })).ToArray();
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var recorder = new RecordingStrategy(new LinearStrategy());
        var context = Context(catalog, new Dictionary<string, object> { ["alignment"] = "distance" }) with { LayerGroupParameters = perGroup };
        var decorated = await new SensDecorator().DecorateAsync(recorder, context, CancellationToken.None);
        var weights = new[] { 1.0, 0.5, 2.0 };
        foreach (var group in Groups)
        {
            var models = RandomTensors(3, 5, 4, 4);
            using var output = Merge(decorated, group + ".weight", null, models, weights, TestScorerCatalog.Resolve(recorder.Parameters));
            foreach (var m in models)
            {
                m.Dispose();
            }
        }

        // alpha_i^l = S_i^l / ||S_i||; t_i = sum_{j != i} g_ij (distance reading); tau_i = t_i / sum t.
        var norms = HandS.Select(row => Math.Sqrt(row.Sum(v => v * v))).ToArray();
        var t = Enumerable.Range(0, 3).Select(i => Enumerable.Range(0, 3).Where(j => j != i).Sum(j => HandG[i][j])).ToArray();
        var tau = t.Select(v => v / t.Sum()).ToArray();
        Assert.Equal(Groups.Length, recorder.Calls.Count);
        foreach (var (group, applied) in recorder.Calls)
        {
            var l = Array.IndexOf(Groups, group);
            var x = Enumerable.Range(0, 3).Select(i =>
                (group == "lm_head" ? 1.0 : HandS[i][l] / norms[i]) * (group == "model.norm" ? 1.0 / 3 : tau[i]) / temperatures[l]).ToArray();
            var exps = x.Select(Math.Exp).ToArray();
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal(weights[i] * 3 * exps[i] / exps.Sum(), applied[i], 12);
            }
        }
        // lm_head without task scaling and with tau from distances still steers; a group with both off would not.
        Assert.Contains(recorder.Calls, c => c.Group == "lm_head" && Math.Abs(c.Weights[0] - weights[0]) > 1e-3);

        // The report says which value each group used, and the alpha it used (1 where task scaling is off).
        var report = decorated.Report;
        var reportedT = Assert.IsType<Dictionary<string, object>>(report.Settings["temperature"]);
        Assert.Equal(temperatures.Cast<object>(), Groups.Select(g => reportedT[g]));
        var reportedTask = Assert.IsType<Dictionary<string, object>>(report.Settings["task_scaling"]);
        Assert.Equal(false, reportedTask["lm_head"]);
        Assert.Equal("absolute", report.Settings["temperature_scale"]);
        var alpha = report.Tables.Single(x => x.Scorer == "alpha");
        Assert.All(Enumerable.Range(0, 3), i => Assert.Equal(1.0, alpha[i, Groups.Length - 1]));
    }

    [Fact]
    public async Task DecoratedStrategy_MirrorsInner_AndKeepsWeightsOfUnscoredGroups()
    {
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var recorder = new RecordingStrategy(new TestTaskArithmetic());
        var decorated = await new SensDecorator().DecorateAsync(recorder, Context(catalog), CancellationToken.None);
        Assert.Equal("sens(task_arithmetic)", decorated.Name);
        Assert.Same(recorder, decorated.Inner);
        Assert.Equal(recorder.Traits, decorated.Traits);
        Assert.Same(recorder.Parameters, decorated.Parameters);
        Assert.Equal(
            ["S", "g", "alpha", "t", "tau", "sigma", "coefficients"],
            decorated.Report.Tables.Select(t => t.Scorer));
        Assert.Equal("sens", decorated.Report.Decorator);
        foreach (var key in new[] { "temperature", "alignment", "task_scorer", "cross_scorer", "task_scaling", "cross_scaling", "samples", "max_length" })
        {
            Assert.True(decorated.Report.Settings.ContainsKey(key), key);
        }

        var sens = (SensDecoratedStrategy)decorated;
        var weights = new[] { 1.0, 2.0, 3.0 };
        Assert.Equal(weights, sens.ScaledWeights(Experts, weights, "vision_tower.proj")); // not scored: c = 1
        var scaled = sens.ScaledWeights(Experts, weights, "model.layers.0");
        Assert.NotEqual(weights, scaled);
        // By name, whatever the order of the request's models.
        var reversed = sens.ScaledWeights(Experts.Reverse().ToArray(), weights.Reverse().ToArray(), "model.layers.0");
        Assert.Equal(scaled.Reverse(), reversed, new Tolerance(0));
        Assert.Throws<InvalidOperationException>(() => sens.ScaledWeights(["math", "stranger"], [1.0, 1.0], "model.layers.0"));
    }

    [Fact]
    public void SamplesAndMaxLength_AreNotDecoratorParameters_TheCalibrationBlockIsTheOnlySource()
    {
        Assert.DoesNotContain(new SensDecorator().Parameters, p => p.Name is "samples" or "max_length");
        var error = Assert.Throws<ArgumentException>(() =>
            TestScorerCatalog.Resolve(new SensDecorator().Parameters, new Dictionary<string, object> { ["samples"] = 12L }));
        Assert.Contains("'samples'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScorersGetAndTheReportRecords_TheCalibrationAsTheHostLoadedIt()
    {
        // As the host loads calibration blocks {samples: 20, max_length: 64}: the scorers are asked for all of it.
        var experts = Experts.Select(e => new ScoredModel(e, "/models/" + e, Data.Set(e, Enumerable.Range(0, 20).Select(i => $"{e} sample {i}."), maxLength: 64))).ToArray();
        var task = TaskScorer(HandS);
        var cross = CrossScorer(HandG);

        var decorated = await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(new TestScorerCatalog(task, cross), experts: experts), CancellationToken.None);

        Assert.Equal(20L, decorated.Report.Settings["samples"]);
        Assert.Equal(64L, decorated.Report.Settings["max_length"]);
        Assert.Equal(20L, task.LastParameters!.Integer("samples"));
        Assert.Equal(64L, cross.LastParameters!.Integer("max_length"));
        foreach (var scorer in new[] { task, cross })
        {
            Assert.All(scorer.LastModels!, m => Assert.Equal((20, 64), (m.Data!.Samples.Count, m.Data.MaxLength)));
        }

        // Blocks of different sizes: every scorer gets each set whole, and the report lists the values per expert.
        experts[1] = experts[1] with { Data = Data.Set("code", Data.Code, maxLength: 16) }; // 8 samples, 16 tokens
        var mixed = await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(new TestScorerCatalog(task, cross), experts: experts), CancellationToken.None);

        var samples = Assert.IsType<Dictionary<string, long>>(mixed.Report.Settings["samples"]);
        Assert.Equal(new Dictionary<string, long> { ["math"] = 20, ["code"] = 8, ["chat"] = 20 }, samples);
        var maxLength = Assert.IsType<Dictionary<string, long>>(mixed.Report.Settings["max_length"]);
        Assert.Equal(new Dictionary<string, long> { ["math"] = 64, ["code"] = 16, ["chat"] = 64 }, maxLength);
        Assert.Equal([20, 8, 20], task.LastModels!.Select(m => m.Data!.Samples.Count));
        Assert.Equal(experts[0].Data!.Samples, task.LastModels![0].Data!.Samples);
        Assert.Equal([64, 16, 64], cross.LastModels!.Select(m => m.Data!.MaxLength));
    }

    [Fact]
    public async Task AblationSwitches_SkipTheirScorer_AndBothOffGiveOneWithoutData()
    {
        var task = TaskScorer(HandS);
        var cross = CrossScorer(HandG);
        var catalog = new TestScorerCatalog(task, cross);

        var noTask = await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, new Dictionary<string, object> { ["task_scaling"] = false }), CancellationToken.None);
        Assert.Equal((0, 1), (task.Runs, cross.Runs));
        Assert.DoesNotContain(noTask.Report.Tables, t => t.Scorer == "S");
        Assert.All(noTask.Report.Tables.Single(t => t.Scorer == "alpha").Values.SelectMany(r => r), a => Assert.Equal(1.0, a));
        Assert.Equal(Groups, noTask.Report.Tables.Single(t => t.Scorer == "coefficients").Columns);

        var noCross = await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, new Dictionary<string, object> { ["cross_scaling"] = false }), CancellationToken.None);
        Assert.Equal((1, 1), (task.Runs, cross.Runs));
        Assert.All(noCross.Report.Tables.Single(t => t.Scorer == "tau").Values[0], t => Assert.Equal(1.0 / 3, t));

        var off = new Dictionary<string, object> { ["task_scaling"] = false, ["cross_scaling"] = false };
        var neither = await new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, off, ExpertModels(withData: false)), CancellationToken.None);
        Assert.Equal((1, 1), (task.Runs, cross.Runs));
        Assert.All(neither.Report.Tables.Single(t => t.Scorer == "coefficients").Values.SelectMany(r => r), c => Assert.Equal(1.0, c));
        Assert.Equal(false, neither.Report.Settings["task_scaling"]);
        Assert.False(neither.Report.Settings.ContainsKey("samples"), "no calibration was used, so none is recorded");
    }

    [Fact]
    public async Task MissingCalibrationData_FailsNamingTheExpert()
    {
        var experts = ExpertModels();
        experts[1] = experts[1] with { Data = null };
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, experts: experts), CancellationToken.None));
        Assert.Contains("'code'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongScorerKindOrUnknownScorer_FailsClearly()
    {
        var catalog = new TestScorerCatalog(TaskScorer(HandS), CrossScorer(HandG));
        var swapped = new Dictionary<string, object> { ["task_scorer"] = "logit_alignment" };
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, swapped), CancellationToken.None));
        Assert.Contains("logit_alignment", error.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<KeyNotFoundException>(() =>
            new SensDecorator().DecorateAsync(new LinearStrategy(), Context(catalog, new Dictionary<string, object> { ["task_scorer"] = "nope" }), CancellationToken.None));
    }
}
