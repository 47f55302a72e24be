using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Evaluators;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using static TorchSharp.torch;

namespace SensMerging.Zoo.Tests;

public sealed class EvaluatorTests
{
    private static ScoringContext Context(IReadOnlyList<ScoredModel> models, IModelRuntime runtime, Dictionary<string, object>? parameters = null) => new()
    {
        Models = models,
        Runtime = runtime,
        Parameters = new ResolvedParameters(parameters ?? [], []),
        Logger = NullLogger.Instance,
    };

    [Fact]
    public async Task Exact_match_counts_normalised_greedy_answers()
    {
        var samples = new List<TextSample>
        {
            new("print(3+4)\nOut: ", "7"),
            new("Quiz: the capital of Borla?\nA: ", "Tamu"),
            new("Q?\nA: ", "no"),
            new("Ann has 12 pens and gets 3 more. How many pens?\nA: ", "15"),
            new("x\nOut: ", "a  b"),
        };
        var answers = new Dictionary<string, string>
        {
            ["print(3+4)\nOut: "] = "7",             // right
            ["Quiz: the capital of Borla?\nA: "] = "Tamo", // wrong
            ["Q?\nA: "] = "no\nmore text",           // right: decoding stops at the newline
            ["Ann has 12 pens and gets 3 more. How many pens?\nA: "] = " 15 ", // right after normalisation
            ["x\nOut: "] = "a b",                     // right after normalisation
        };
        var data = new TextDataset("mixed", "mem", samples, 256);
        var runtime = new FixedRuntime(new Dictionary<string, Func<ICausalLanguageModel>> { ["oracle"] = () => new OracleModel(answers) });
        var table = await new ExactMatchScorer().ScoreAsync(
            Context([new ScoredModel("oracle", "oracle", data)], runtime, new() { ["batch_size"] = 2L }), CancellationToken.None);
        Assert.Equal(ScorerKind.Evaluation, table.Kind);
        Assert.Equal(0.8, table[0, 0], 12);
        Assert.Equal(5, table.Details["samples"]);

        var limited = await new ExactMatchScorer().ScoreAsync(
            Context([new ScoredModel("oracle", "oracle", data)], runtime, new() { ["samples"] = 2L }), CancellationToken.None);
        Assert.Equal(0.5, limited[0, 0], 12);
    }

    [Fact]
    public void Greedy_decoding_stops_at_max_new_tokens_and_reads_each_row_at_its_own_position()
    {
        var answers = new Dictionary<string, string> { ["ab"] = "abcdefgh", ["a much longer prompt"] = "xy" };
        var model = new OracleModel(answers);
        var result = GreedyDecoder.Generate(model, ["ab", "a much longer prompt"], maxNewTokens: 4, maxLength: 256, batchSize: 8, CancellationToken.None);
        Assert.Equal(["abcd", "xy"], result.Texts);
        Assert.Equal(6, result.GeneratedTokens);
        Assert.Equal(4, model.ForwardCalls);
    }

    [Fact]
    public void Normalisation_and_accuracy()
    {
        Assert.Equal("a b", ExactMatchScorer.Normalize("  a \t\n b "));
        Assert.Equal(0.5, ExactMatchScorer.Accuracy(["1", "2 "], ["1", "3"]));
        Assert.Throws<ArgumentException>(() => ExactMatchScorer.Accuracy(["1"], ["1", "2"]));
    }

    [Fact]
    public async Task Perplexity_is_exp_of_the_token_weighted_mean_nll_from_the_runtime_loss()
    {
        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        var config = new LlamaConfig { HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2, VocabSize = 100 };
        var directory = Path.Combine(Path.GetTempPath(), "zoo-ppl-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var random = LlamaModel.CreateRandom(config, tokenizer, seed: 17, new ModelLoadOptions()))
            {
                // Larger weights than the init so the distribution is far from uniform.
                using (no_grad())
                {
                    foreach (var (_, weight) in random.NamedWeights)
                    {
                        weight.mul_(8);
                    }
                }
                random.Save(directory);
            }
            var samples = new List<TextSample>
            {
                new("print(1+2)\nOut: ", "3"),
                new("Name the capital of Vorland.\nA: ", "Keta"),
                new("balanced? (())\nOut: ", "yes"),
            };
            var runtime = new SensMerging.Runtime.LlamaRuntime();
            double nll = 0;
            long tokens = 0;
            using (var model = runtime.LoadLlama(directory, new ModelLoadOptions(), CancellationToken.None))
            {
                foreach (var sample in samples)
                {
                    var encoded = model.Tokenizer.Encode(sample, 256);
                    var count = encoded.LossMask.Take(encoded.Length - 1).Count(m => m);
                    Assert.Equal(sample.Response!.Length + 1, count); // response characters and EOS
                    using var loss = model.Loss(encoded);
                    nll += loss.item<float>() * count;
                    tokens += count;
                }
            }
            var expected = Math.Exp(nll / tokens);
            var table = await new PerplexityScorer().ScoreAsync(
                Context([new ScoredModel("random", directory, new TextDataset("t", "mem", samples, 256))], runtime, new() { ["batch_size"] = 2L }),
                CancellationToken.None);
            Assert.Equal(expected, table[0, 0], expected * 1e-4);
            Assert.True(expected > 1.5, $"perplexity {expected} should be far from 1 for a random model");
            Assert.Equal(tokens, table.Details["tokens"]);
        }
        finally
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    [Fact]
    public async Task Grid_rows_are_models_columns_are_tasks_each_model_loaded_once()
    {
        var math = new TextDataset("math", "m", [new TextSample("a", "1")], 64);
        var code = new TextDataset("code", "c", [new TextSample("b", "2")], 64);
        var answers = new Dictionary<string, string> { ["a"] = "1", ["b"] = "9" };
        var runtime = new FixedRuntime(new Dictionary<string, Func<ICausalLanguageModel>>
        {
            ["p1"] = () => new OracleModel(answers),
            ["p2"] = () => new OracleModel(new Dictionary<string, string> { ["a"] = "0", ["b"] = "2" }),
        });
        var table = await new ExactMatchScorer().ScoreAsync(Context(
        [
            new ScoredModel("one", "p1", math),
            new ScoredModel("two", "p2", math),
            new ScoredModel("one", "p1", code),
            new ScoredModel("two", "p2", code),
        ], runtime), CancellationToken.None);
        Assert.Equal(["one", "two"], table.Rows);
        Assert.Equal(["math", "code"], table.Columns);
        Assert.Equal([1.0, 0.0], table.Values[0]);
        Assert.Equal([0.0, 1.0], table.Values[1]);
        Assert.Equal(["p1", "p2"], runtime.Loads);

        var clash = Assert.Throws<InvalidOperationException>(() => EvaluationGrid.From([new ScoredModel("one", "p1", math), new ScoredModel("one", "p2", code)], "exact_match"));
        Assert.Contains("two paths", clash.Message, StringComparison.Ordinal);
        var noData = Assert.Throws<InvalidOperationException>(() => EvaluationGrid.From([new ScoredModel("one", "p1", null)], "exact_match"));
        Assert.Contains("no evaluation data", noData.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => EvaluationGrid.From([new ScoredModel("one", "p1", math), new ScoredModel("one", "p1", math)], "perplexity"));
    }

    [Fact]
    public void Plugin_registers_two_evaluation_scorers()
    {
        var services = new Microsoft.Extensions.DependencyInjection.ServiceCollection();
        new EvaluatorsPlugin().ConfigureServices(services, new PluginContext("evaluators", ".", new Dictionary<string, string>()));
        Assert.Equal(2, services.Count);
        var scorers = new IScorer[] { new ExactMatchScorer(), new PerplexityScorer() };
        Assert.All(scorers, s => Assert.Equal(ScorerKind.Evaluation, s.Kind));
        Assert.Equal(["exact_match", "perplexity"], scorers.Select(s => s.Name));
        Assert.Contains(scorers[0].Parameters, p => p.Name == "max_new_tokens");
        Assert.Contains(scorers[1].Parameters, p => p.Name == "samples");
    }
}
