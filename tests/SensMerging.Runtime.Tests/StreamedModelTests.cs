using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Scorers;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

/// <summary>
/// A model streamed from its files under a memory budget (<see cref="StreamedLlamaModel"/>) gives what the same model
/// loaded whole gives: per weight, sum |theta x grad| and sum grad^2 of each sample's gradient (its pieces summed) equal
/// the in-memory layer-by-layer pass to 1e-5 relative, for every architecture of the reference set (tied and untied
/// heads, soft-capping, sliding windows), with one sample per streamed pass or all at once and head slices that do not
/// divide the vocabulary; the sensitivity and fisher scorers under a budget equal them unbudgeted; logits equal.
/// </summary>
public sealed class StreamedModelTests : IDisposable
{
    private const double Relative = 1e-5;

    private static readonly string[] Texts =
    [
        "<s> a b c d e f g h i j k l m n",
        "<s> z y x w v u a a b",
        "<s> m n o p q r s t u v w x y z 0 1 2",
    ];

    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [MemberData(nameof(ArchitectureReferenceTests.Cases), MemberType = typeof(ArchitectureReferenceTests))]
    public async Task Streamed_gradients_scores_and_logits_equal_the_in_memory_model(string name, string dtype, string configJson)
    {
        var configPath = Path.Combine(_temp.Path, name + ".config.json");
        var dir = await ReferencePython.MakeModelAsync(_temp.Sub(name), configPath, configJson, 7, dtype);
        var runtime = new LlamaRuntime();

        // In memory: one sample at a time, whole gradients.
        using var whole = runtime.LoadLlama(dir, new ModelLoadOptions(RequiresGrad: true), CancellationToken.None);
        var samples = Texts.Select(t => whole.Tokenizer.Encode(new TextSample(t), 64)).ToArray();
        var count = whole.NamedWeights.Count;
        var expected = new (double Taylor, double Fisher)[samples.Length, count];
        var expectedLoss = new double[samples.Length];
        for (var s = 0; s < samples.Length; s++)
        {
            var index = s;
            expectedLoss[s] = whole.BackwardLayerwise(samples[s], (k, w, g) => expected[index, k] = Statistics(w, g), CancellationToken.None);
        }

        var plan = new StreamingPlan(whole.Config, 4);
        var longest = samples.Max(x => x.Length);
        var oneSample = plan.BudgetFor(1, longest, longest) + (plan.SampleBytes(longest, longest) / 2);
        var allSamples = plan.BudgetFor(4, longest, longest);
        foreach (var (budget, sliceRows, perPass) in new[] { (oneSample, (int?)null, 1), (allSamples, (int?)5, 3) })
        {
            using var streamed = runtime.OpenStreamed(dir, new ModelLoadOptions(RequiresGrad: true), budget, CancellationToken.None);
            streamed.HeadRowsLimit = sliceRows;
            Assert.Equal(whole.NamedWeights.Select(w => (w.Name, string.Join(",", w.Weight.shape))), streamed.NamedWeights.Select(w => (w.Name, string.Join(",", w.Weight.shape))));
            var actual = new (double Taylor, double Fisher)[samples.Length, count];
            var losses = streamed.BackwardLayerwise(samples, (s, k, w, g) =>
            {
                Assert.Equal(w.shape, g.shape);
                var (taylor, fisher) = Statistics(w, g);
                actual[s, k] = (actual[s, k].Taylor + taylor, actual[s, k].Fisher + fisher);
            }, CancellationToken.None);
            Assert.Equal(perPass, streamed.LastSamplesPerPass);
            if (sliceRows is { } rows)
            {
                Assert.Equal(rows, streamed.LastHeadRows);
            }
            for (var s = 0; s < samples.Length; s++)
            {
                Assert.True(Math.Abs(losses[s] - expectedLoss[s]) <= Relative * expectedLoss[s], $"{name} sample {s}: loss {losses[s]:G9} vs {expectedLoss[s]:G9}");
                for (var k = 0; k < count; k++)
                {
                    var weightName = whole.NamedWeights[k].Name;
                    Assert.True(expected[s, k].Taylor > 0, $"{name} {weightName}: zero statistic in memory");
                    Assert.True(Math.Abs(actual[s, k].Taylor - expected[s, k].Taylor) <= Relative * expected[s, k].Taylor,
                        $"{name} sample {s} {weightName} (budget {budget}, slices {sliceRows}): |w g| streamed {actual[s, k].Taylor:G9} vs in memory {expected[s, k].Taylor:G9}");
                    Assert.True(Math.Abs(actual[s, k].Fisher - expected[s, k].Fisher) <= Relative * expected[s, k].Fisher,
                        $"{name} sample {s} {weightName}: g^2 streamed {actual[s, k].Fisher:G9} vs in memory {expected[s, k].Fisher:G9}");
                }
            }

            // Logits of a batch (forward without autograd) equal the whole model's.
            var row = samples[0].Ids;
            using var ids = tensor(row.Concat(row.Reverse()).ToArray(), [2, row.Length], ScalarType.Int64);
            using var expectedLogits = whole.Forward(ids);
            using var actualLogits = streamed.Forward(ids);
            var scale = expectedLogits.abs().max().item<float>();
            var worst = (actualLogits - expectedLogits).abs().max().item<float>();
            Assert.True(worst <= Relative * scale, $"{name}: streamed logits differ by {worst:E3} (scale {scale:F3})");
        }

        // The scorers: a budget below the model's in-memory need streams it, with the scores of the unbudgeted run.
        using (var loaded = runtime.Load(dir, new ModelLoadOptions(RequiresGrad: true) { MaxMemoryBytes = oneSample }, CancellationToken.None))
        {
            Assert.IsType<StreamedLlamaModel>(loaded, exactMatch: true);
        }
        foreach (IScorer scorer in new IScorer[] { new SensitivityScorer(), new FisherScorer() })
        {
            var inMemory = await scorer.ScoreAsync(Context(name, dir, null), CancellationToken.None);
            var budgeted = await scorer.ScoreAsync(Context(name, dir, oneSample), CancellationToken.None);
            Assert.Equal(inMemory.Columns, budgeted.Columns);
            for (var g = 0; g < inMemory.Columns.Count; g++)
            {
                var e = inMemory.Values[0][g];
                var a = budgeted.Values[0][g];
                Assert.True(e > 0 && Math.Abs(a - e) <= Relative * e, $"{name} {scorer.Name} {inMemory.Columns[g]}: budgeted {a:G9} vs in memory {e:G9}");
            }
        }
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("qwen2")]
    [InlineData("gemma2")]
    public async Task Logit_alignment_under_a_budget_equals_it_in_memory(string name)
    {
        var configJson = ArchitectureReferenceTests.Cases().Select(c => (object[])c).Single(c => (string)c[0] == name)[2].ToString()!;
        var configPath = Path.Combine(_temp.Path, name + ".config.json");
        await File.WriteAllTextAsync(configPath, configJson);
        var experts = new List<ScoredModel>();
        for (var e = 0; e < 3; e++)
        {
            var dir = _temp.Sub(name + "-" + e);
            ReferencePython.Run("make", configPath, dir, (20 + e).ToString(System.Globalization.CultureInfo.InvariantCulture), "F32");
            await File.WriteAllTextAsync(Path.Combine(dir, "tokenizer.json"), TinyModel.WordTokenizerJson());
            var texts = Texts.Select(t => new TextSample(t[..(t.Length - (3 * e))])).ToArray();
            experts.Add(new ScoredModel("expert" + e, dir, new TextDataset("task" + e, "/calibration/task" + e + ".jsonl", texts, 64)));
        }
        var plan = new StreamingPlan(LlamaConfig.Load(Path.Combine(experts[0].ModelPath, "config.json")), 4);
        var budget = 2 * plan.MinimumStreamingBytes;
        using (var loaded = new LlamaRuntime().Load(experts[0].ModelPath, new ModelLoadOptions() { MaxMemoryBytes = budget }, CancellationToken.None))
        {
            Assert.IsType<StreamedLlamaModel>(loaded, exactMatch: true);
        }
        var scorer = new LogitAlignmentScorer();
        ScoringContext Context(long? limit) => new()
        {
            Models = experts,
            Runtime = new LlamaRuntime(),
            Parameters = new ResolvedParameters(new Dictionary<string, object>
            {
                [SensMerging.Scorers.Calibration.Samples] = (long)Texts.Length,
                [SensMerging.Scorers.Calibration.MaxLength] = 64L,
                [LogitAlignmentScorer.ReferenceMemoryMb] = 1024L,
            }, []),
            Logger = NullLogger.Instance,
            MaxMemoryBytes = limit,
        };
        var inMemory = await scorer.ScoreAsync(Context(null), CancellationToken.None);
        var budgeted = await scorer.ScoreAsync(Context(budget), CancellationToken.None);
        for (var i = 0; i < experts.Count; i++)
        {
            for (var j = 0; j < experts.Count; j++)
            {
                var e = inMemory.Values[i][j];
                var a = budgeted.Values[i][j];
                Assert.True(i == j ? a == 0 && e == 0 : e > 0 && Math.Abs(a - e) <= Relative * e, $"{name} g[{i},{j}]: budgeted {a:G9} vs in memory {e:G9}");
            }
        }
    }

    [Fact]
    public void A_budget_too_small_for_one_block_is_refused_with_the_numbers()
    {
        var dir = _temp.Sub("small");
        new TinyModel(TinyModel.SmallConfig(), seed: 3).Write(dir);
        var runtime = new LlamaRuntime();
        var error = Assert.Throws<InvalidOperationException>(() => runtime.Load(dir, new ModelLoadOptions(RequiresGrad: true) { MaxMemoryBytes = 1000 }, CancellationToken.None));
        Assert.Contains("memory budget 0.0 MiB is too small", error.Message, StringComparison.Ordinal);
        Assert.Contains("one block's weights", error.Message, StringComparison.Ordinal);
        Assert.Contains(dir, error.Message, StringComparison.Ordinal);

        // Enough for a block but not for a long sample's layer-boundary activations: refused when the pass is planned.
        var config = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        var plan = new StreamingPlan(config, 4);
        using var model = runtime.OpenStreamed(dir, new ModelLoadOptions(RequiresGrad: true), plan.MinimumStreamingBytes, CancellationToken.None);
        var sample = model.Tokenizer.Encode(new TextSample(string.Join(' ', Enumerable.Repeat("a b c d", 30))), 120);
        var pass = Assert.Throws<InvalidOperationException>(() => model.BackwardLayerwise([sample], (_, _, _, _) => { }, CancellationToken.None));
        Assert.Contains("layer-boundary activations", pass.Message, StringComparison.Ordinal);
        Assert.Contains("--max-memory", pass.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_pass_is_planned_in_the_budget_less_a_twentieth_and_BudgetFor_is_the_least_budget_for_its_samples()
    {
        var plan = new StreamingPlan(TinyModel.SmallConfig(tied: true), 4);
        foreach (var (tokens, loss) in new[] { (16, 15), (64, 63), (200, 10) })
        {
            for (var n = 1; n <= 6; n++)
            {
                var budget = plan.BudgetFor(n, tokens, loss);
                Assert.Equal(n, plan.SamplesPerPass(budget, tokens, loss, 100, "m"));
                // The samples' and the block's bytes fit in 19/20 of it, written out.
                Assert.True(budget - (budget / 20) >= plan.BlockReserveBytes(tokens) + (n * plan.SampleBytes(tokens, loss)));
                // One byte less takes one sample fewer, or for one sample is refused naming the headroom.
                if (n > 1)
                {
                    Assert.Equal(n - 1, plan.SamplesPerPass(budget - 1, tokens, loss, 100, "m"));
                }
                else
                {
                    var error = Assert.Throws<InvalidOperationException>(() => plan.SamplesPerPass(budget - 1, tokens, loss, 100, "m"));
                    Assert.Contains("headroom", error.Message, StringComparison.Ordinal);
                }
                // Never more than the samples there are.
                Assert.Equal(Math.Min(n, 2), plan.SamplesPerPass(budget, tokens, loss, 2, "m"));
            }
        }
    }

    private static ScoringContext Context(string name, string dir, long? budget) => new()
    {
        Models = [new ScoredModel(name, dir, new TextDataset(name, "/calibration/" + name + ".jsonl", Texts.Select(t => new TextSample(t)).ToArray(), 64))],
        Runtime = new LlamaRuntime(),
        Parameters = new ResolvedParameters(new Dictionary<string, object> { [SensMerging.Scorers.Calibration.Samples] = (long)Texts.Length, [SensMerging.Scorers.Calibration.MaxLength] = 64L }, []),
        Logger = NullLogger.Instance,
        MaxMemoryBytes = budget,
    };

    private static (double Taylor, double Fisher) Statistics(Tensor weight, Tensor gradient)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var w = weight.detach().to_type(ScalarType.Float64);
        var g = gradient.to_type(ScalarType.Float64);
        return ((w * g).abs().sum().item<double>(), (g * g).sum().item<double>());
    }
}
