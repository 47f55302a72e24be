using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Evaluators;
using SensMerging.Runtime;
using SensMerging.Runtime.Calibration;
using SensMerging.Runtime.Tokenization;
using SensMerging.Zoo.Tasks;
using SensMerging.Zoo.Training;

namespace SensMerging.Zoo.Tests;

public sealed class ZooBuilderTests(TinyZooFixture zoo) : IClassFixture<TinyZooFixture>
{
    private static readonly string[] Models = ["base", "math", "code", "knowledge"];

    [Fact]
    public void Every_repository_and_data_file_is_written()
    {
        var layout = zoo.Result.Layout;
        Assert.False(zoo.Result.Reused);
        foreach (var model in Models)
        {
            Assert.Equal(Path.Combine(zoo.Root, "repos", "zoo", model), layout.ModelPath(model));
            foreach (var file in ZooLayout.ModelFiles)
            {
                Assert.True(File.Exists(Path.Combine(layout.ModelPath(model), file)), $"{model}/{file} is missing");
            }
        }
        foreach (var task in ZooTasks.Names)
        {
            Assert.True(File.Exists(Path.Combine(zoo.Root, "data", task, "eval.jsonl")));
            Assert.True(File.Exists(Path.Combine(zoo.Root, "data", task, "calibration.jsonl")));
        }
        Assert.True(File.Exists(Path.Combine(zoo.Root, "zoo.json")));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(layout.ModelPath("math"), "config.json")))!;
        Assert.Equal("llama", config["model_type"]!.GetValue<string>());
        var card = File.ReadAllText(Path.Combine(layout.ModelPath("math"), "README.md"));
        Assert.Contains("base_model: zoo/base", card, StringComparison.Ordinal);
        Assert.Equal(["math", "code", "knowledge"], zoo.Result.Experts);
        Assert.Contains(zoo.Progress, p => p.Stage == "train" && p.Model == "knowledge" && p.Step == p.TotalSteps);
    }

    [Fact]
    public void Manifest_records_seed_settings_and_training_figures()
    {
        var manifest = zoo.Result.Manifest;
        Assert.Equal(TinyZooFixture.Seed, manifest.Seed);
        Assert.Equal("tiny", manifest.Size);
        Assert.Equal(ZooManifest.Fingerprint(ZooSettings.For(ZooSize.Tiny)), ZooManifest.Fingerprint(manifest.Settings));
        Assert.Equal(Models, manifest.Models.Select(m => m.Name));
        Assert.Equal(ZooSettings.For(ZooSize.Tiny).Base.Steps, manifest.Models[0].Training.Steps);
        Assert.All(manifest.Models.Skip(1), m => Assert.Equal("zoo/base", m.BaseModel));
        Assert.All(manifest.Tasks, t => Assert.True(t.EvalSamples > 0 && t.CalibrationSamples > 0 && t.BaseTrainSamples < t.TrainSamples));
    }

    [Fact]
    public void Training_lowered_the_loss_of_every_model()
    {
        foreach (var model in zoo.Result.Manifest.Models)
        {
            Assert.True(model.Training.FinalLoss < model.Training.InitialLoss * 0.9,
                $"{model.Name}: loss {model.Training.InitialLoss} -> {model.Training.FinalLoss}");
            Assert.True(model.Training.Seconds > 0);
        }
        // The base starts from random init (loss near ln 100 = 4.6) and must learn a lot.
        Assert.True(zoo.Result.Manifest.Models[0].Training.FinalLoss < 3.0);
    }

    [Fact]
    public async Task Models_load_with_the_runtime_and_experts_share_the_base_tensor_names()
    {
        var runtime = new LlamaRuntime();
        using var baseModel = runtime.LoadLlama(zoo.Result.ModelPath("base"), new ModelLoadOptions(), CancellationToken.None);
        Assert.IsType<WordLevelTokenizer>(baseModel.TextTokenizer);
        Assert.Equal(100, baseModel.VocabularySize);
        var text = "print(3+4)\nOut: ";
        Assert.Equal(text, baseModel.Tokenizer.Decode(baseModel.Tokenizer.EncodeText(text)));
        foreach (var expert in zoo.Result.Experts)
        {
            using var model = runtime.LoadLlama(zoo.Result.ModelPath(expert), new ModelLoadOptions(), CancellationToken.None);
            Assert.Equal(baseModel.NamedWeights.Select(w => (w.Name, string.Join('x', w.Weight.shape))), model.NamedWeights.Select(w => (w.Name, string.Join('x', w.Weight.shape))));
            // Fine-tuning changed the weights.
            var delta = baseModel.NamedWeights.Zip(model.NamedWeights).Sum(p => (p.First.Weight - p.Second.Weight).abs().sum().item<float>());
            Assert.True(delta > 0);
        }
        var loader = new CalibrationLoader();
        foreach (var task in zoo.Result.Tasks)
        {
            var eval = await loader.LoadAsync(zoo.Result.Layout.EvalPath(task), 1000, 64, task, CancellationToken.None);
            var calibration = await loader.LoadAsync(zoo.Result.Layout.CalibrationPath(task), 1000, 64, task, CancellationToken.None);
            Assert.Equal(zoo.Result.Manifest.Tasks.Single(t => t.Name == task).EvalSamples, eval.SampleCount);
            Assert.Equal(ZooSettings.For(ZooSize.Tiny).Data.Calibration, calibration.SampleCount);
            var dev = await loader.LoadAsync(zoo.Result.Layout.DevPath(task), 1000, 64, task, CancellationToken.None);
            Assert.Equal(zoo.Result.Manifest.Tasks.Single(t => t.Name == task).DevSamples, dev.SampleCount);
            Assert.True(dev.SampleCount > 0);
        }
    }

    [Fact]
    public async Task Each_expert_has_lower_perplexity_than_the_base_on_its_own_task()
    {
        var loader = new CalibrationLoader();
        var models = new List<ScoredModel>();
        foreach (var task in zoo.Result.Tasks)
        {
            var data = (await loader.LoadAsync(zoo.Result.Layout.EvalPath(task), 1000, 64, task, CancellationToken.None)).Dataset;
            models.Add(new ScoredModel("base", zoo.Result.ModelPath("base"), data));
            models.Add(new ScoredModel(task, zoo.Result.ModelPath(task), data));
        }
        var table = await new PerplexityScorer().ScoreAsync(new ScoringContext
        {
            Models = models,
            Runtime = new LlamaRuntime(),
            Parameters = ResolvedParameters.Empty,
            Logger = NullLogger.Instance,
        }, CancellationToken.None);
        Assert.Equal(["base", "math", "code", "knowledge"], table.Rows);
        Assert.Equal(["math", "code", "knowledge"], table.Columns);
        for (var c = 0; c < table.Columns.Count; c++)
        {
            var expertRow = table.Rows.ToList().IndexOf(table.Columns[c]);
            Assert.True(table[expertRow, c] < table[0, c], $"{table.Columns[c]}: expert {table[expertRow, c]} vs base {table[0, c]}");
        }
        // Each expert was only scored on its own task.
        Assert.True(double.IsNaN(table[1, 1]));
    }

    [Fact]
    public async Task A_second_build_reuses_the_zoo_and_a_missing_file_forces_a_rebuild_elsewhere()
    {
        var again = await new ZooBuilder().BuildAsync(zoo.Root, TinyZooFixture.Seed, ZooSize.Tiny, null, CancellationToken.None);
        Assert.True(again.Reused);
        Assert.Equal(zoo.Result.Manifest.CreatedUtc, again.Manifest.CreatedUtc);

        // Another seed in the same folder would rebuild: check the decision without paying for it by copying the zoo.
        var copy = Path.Combine(Path.GetTempPath(), "zoo-copy-" + Guid.NewGuid().ToString("N"));
        try
        {
            CopyDirectory(zoo.Root, copy);
            File.Delete(Path.Combine(copy, "repos", "zoo", "code", "model.safetensors"));
            var rebuilt = await new ZooBuilder().BuildAsync(copy, TinyZooFixture.Seed, ZooSize.Tiny, null, CancellationToken.None);
            Assert.False(rebuilt.Reused);
            Assert.True(File.Exists(Path.Combine(copy, "repos", "zoo", "code", "model.safetensors")));
            // Deterministic: the rebuilt data files are byte-identical.
            Assert.Equal(File.ReadAllBytes(zoo.Result.Layout.EvalPath("math")), File.ReadAllBytes(rebuilt.Layout.EvalPath("math")));
            Assert.Equal(
                File.ReadAllBytes(Path.Combine(zoo.Result.ModelPath("base"), "model.safetensors")),
                File.ReadAllBytes(Path.Combine(rebuilt.ModelPath("base"), "model.safetensors")));
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [Fact]
    public async Task A_change_to_the_experts_only_keeps_the_base_and_gives_the_fresh_build_bit_for_bit()
    {
        var tiny = ZooSettings.For(ZooSize.Tiny);
        var experts = tiny with { Expert = tiny.Expert with { Steps = 30, AnchorDecay = 20 }, ExpertReplay = 0.2, ExpertDistillation = 0.25 };
        var reusing = Path.Combine(Path.GetTempPath(), "zoo-reuse-" + Guid.NewGuid().ToString("N"));
        var fresh = Path.Combine(Path.GetTempPath(), "zoo-fresh-" + Guid.NewGuid().ToString("N"));
        try
        {
            CopyDirectory(zoo.Root, reusing);
            var progress = new List<ZooProgress>();
            var kept = await new ZooBuilder().BuildAsync(reusing, TinyZooFixture.Seed, experts, new ListProgress(progress), CancellationToken.None);
            Assert.False(kept.Reused);
            Assert.Contains(progress, p => p.Stage == "reuse" && p.Model == "base");
            Assert.DoesNotContain(progress, p => p.Stage == "train" && p.Model == "base");
            Assert.Contains(progress, p => p.Stage == "train" && p.Model == "math");
            Assert.Equal(ZooManifest.Fingerprint(experts), ZooManifest.Fingerprint(kept.Manifest.Settings));
            Assert.Equal(zoo.Result.Manifest.Models[0].Training, kept.Manifest.Models[0].Training);

            // The same settings built from nothing: the base trains to the same bits (deterministic), and so do the
            // experts fine-tuned from the kept base.
            var built = await new ZooBuilder().BuildAsync(fresh, TinyZooFixture.Seed, experts, null, CancellationToken.None);
            foreach (var model in Models)
            {
                Assert.True(
                    File.ReadAllBytes(Path.Combine(built.ModelPath(model), "model.safetensors"))
                        .SequenceEqual(File.ReadAllBytes(Path.Combine(kept.ModelPath(model), "model.safetensors"))),
                    $"{model} differs between the build that kept the base and the fresh one");
            }
            Assert.False(
                File.ReadAllBytes(Path.Combine(zoo.Result.ModelPath("math"), "model.safetensors"))
                    .SequenceEqual(File.ReadAllBytes(Path.Combine(kept.ModelPath("math"), "model.safetensors"))),
                "the experts were trained again with the new settings");

            // A setting that shapes the base trains it again.
            progress.Clear();
            var rebased = experts with { Base = experts.Base with { Steps = experts.Base.Steps + 10 } };
            await new ZooBuilder().BuildAsync(reusing, TinyZooFixture.Seed, rebased, new ListProgress(progress), CancellationToken.None);
            Assert.Contains(progress, p => p.Stage == "train" && p.Model == "base");
            Assert.DoesNotContain(progress, p => p.Stage == "reuse");
        }
        finally
        {
            foreach (var folder in new[] { reusing, fresh })
            {
                if (Directory.Exists(folder))
                {
                    Directory.Delete(folder, recursive: true);
                }
            }
        }
    }

    /// <summary>Records progress on the caller's thread (Progress&lt;T&gt; posts asynchronously).</summary>
    private sealed class ListProgress(List<ZooProgress> sink) : IProgress<ZooProgress>
    {
        public void Report(ZooProgress value)
        {
            lock (sink)
            {
                sink.Add(value);
            }
        }
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var directory in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(directory.Replace(from, to, StringComparison.Ordinal));
        }
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal));
        }
    }
}
