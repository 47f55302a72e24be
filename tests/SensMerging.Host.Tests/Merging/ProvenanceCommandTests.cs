using System.Text.Json;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// <c>sensmerge merge</c> records what happened, as a user runs it (a real process, real plugins, real files, a real
/// registry): the calibration the scorers used, each table once, and problems in the input data; <c>--strict</c> fails on them.
/// </summary>
public sealed class ProvenanceCommandTests : IDisposable
{
    private const string UpProj = "model.layers.0.mlp.up_proj.weight";

    private readonly string _root = TestPaths.NewTempDir("provenance");
    private readonly string _registry;
    private readonly string _plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public ProvenanceCommandTests() => _registry = Path.Combine(_root, "registry", "merges.db");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private string Config(string name, string yaml)
    {
        var path = Path.Combine(_root, name);
        File.WriteAllText(path, yaml);
        return path;
    }

    private Task<(int ExitCode, string StdOut, string StdErr)> SensMerge(params string[] args) =>
        Processes.SensMergeAsync([.. args, "--plugins", _plugins, "--registry", _registry]);

    private async Task<MergeRecord> RecordAsync(string id)
    {
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        return await registry.GetAsync(id) ?? throw new InvalidOperationException($"no record {id}");
    }

    [Fact]
    public async Task A_sens_merge_records_the_calibration_in_effect_and_each_table_once()
    {
        var models = Path.Combine(_root, "llamas");
        TinyLlama.Write(Path.Combine(models, "base"), 10);
        TinyLlama.Write(Path.Combine(models, "math"), 11);
        TinyLlama.Write(Path.Combine(models, "code"), 12);
        var mathData = TinyLlama.Calibration(Path.Combine(models, "math.jsonl"), "add", 30);
        var codeData = TinyLlama.Calibration(Path.Combine(models, "code.jsonl"), "print", 30);
        // The calibration blocks ask for 20 samples of at most 64 tokens; the decorator keeps its defaults (100, 256).
        var config = Config("sens.yaml", $$"""
            merge_method: task_arithmetic
            base_model: {{Path.Combine(models, "base")}}
            models:
              - model: {{Path.Combine(models, "math")}}
                calibration: {path: {{mathData}}, samples: 20, max_length: 64}
              - model: {{Path.Combine(models, "code")}}
                calibration: {path: {{codeData}}, samples: 20, max_length: 64}
            decorators:
              - name: sens
            """);

        var (exit, stdout, stderr) = await SensMerge("merge", config, "--out", Path.Combine(_root, "sens-out"));

        Assert.True(exit == 0, stderr + stdout);
        var id = stdout.Split("registry id ")[1].Trim();
        var record = await RecordAsync(id);
        var settings = record.DecoratorSettings["sens"];
        Assert.Equal(20, settings["samples"].AsInteger);
        Assert.Equal(64, settings["max_length"].AsInteger);

        // Scores: what the scorers returned, once each, saying what they used; the decorator's own tables go with the coefficients.
        Assert.Equal(["sensitivity", "logit_alignment"], record.ScoreTables.Select(t => t.Scorer));
        Assert.All(record.ScoreTables, t => Assert.Equal((20.0, 64.0), (t.Details["samples_per_task"], t.Details["max_length"])));
        var coefficients = record.Coefficients ?? throw new InvalidOperationException("no coefficients recorded");
        Assert.Equal(["alpha", "t", "tau", "sigma"], coefficients.Tables.Select(t => t.Scorer));

        (exit, stdout, stderr) = await SensMerge("registry", "show", id);
        Assert.True(exit == 0, stderr);
        foreach (var table in record.ScoreTables.Concat(coefficients.Tables))
        {
            Assert.Equal(1, Occurrences(stdout, RegistryText.ScoreTable(table.Rows, table.Columns, table.Values)));
        }
        Assert.Contains("samples=20, max_length=64", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task NaN_Inf_and_extra_tensors_are_warned_about_and_recorded_and_strict_fails_on_them()
    {
        var parent = Path.Combine(_root, "models");
        var baseWeights = TinyModels.Write(Path.Combine(parent, "base"), 1);
        TinyModels.Write(Path.Combine(parent, "poisoned"), 2, baseWeights, edit: (name, values) =>
        {
            if (name == UpProj)
            {
                (values[0], values[5], values[7]) = (float.NaN, float.PositiveInfinity, float.NaN);
            }
        });
        TinyModels.Write(Path.Combine(parent, "extended"), 3, baseWeights, extraTensors: [("model.layers.0.mlp.up_proj.bias", [24])]);
        TinyModels.Write(Path.Combine(parent, "clean"), 4, baseWeights);
        string Yaml(string second) => $"merge_method: task_arithmetic\nbase_model: {Path.Combine(parent, "base")}\nmodels:\n" +
            $"  - model: {Path.Combine(parent, "poisoned")}\n  - model: {Path.Combine(parent, second)}\n";
        var output = Path.Combine(_root, "out");

        var (exit, stdout, stderr) = await SensMerge("merge", Config("warned.yaml", Yaml("extended")), "--out", output);

        Assert.True(exit == 0, stderr + stdout);
        Assert.Contains($"Input tensor '{UpProj}' of model '{Path.Combine(parent, "poisoned")}' holds 2 NaN and 1 infinite value(s)", stderr, StringComparison.Ordinal);
        Assert.Contains("model.layers.0.mlp.up_proj.bias", stderr, StringComparison.Ordinal);
        var id = stdout.Split("registry id ")[1].Trim();
        var record = await RecordAsync(id);
        Assert.Equal(MergeStatus.Succeeded, record.Status);
        Assert.Equal([MergeWarningKinds.ExtraTensors, MergeWarningKinds.NonFinite], record.Warnings.Select(w => w.Kind));
        Assert.Equal(["model.layers.0.mlp.up_proj.bias"], record.Warnings[0].Tensors);
        Assert.Equal(Path.Combine(parent, "extended"), record.Warnings[0].Model);
        Assert.Equal((2L, 1L, UpProj), (record.Warnings[1].NanCount, record.Warnings[1].InfCount, record.Warnings[1].Tensors.Single()));
        (exit, stdout, stderr) = await SensMerge("registry", "show", id);
        Assert.True(exit == 0, stderr);
        Assert.Contains("Warnings (2)", stdout, StringComparison.Ordinal);
        Assert.Contains("holds 2 NaN and 1 infinite value(s)", stdout, StringComparison.Ordinal);
        (exit, stdout, stderr) = await SensMerge("registry", "export", id);
        Assert.True(exit == 0, stderr);
        Assert.Equal(2, JsonDocument.Parse(stdout).RootElement.GetProperty("record").GetProperty("warnings")[1].GetProperty("nanCount").GetInt64());

        // --strict: the same data problem fails the merge, says why, leaves no output and no succeeded record.
        var strictOut = Path.Combine(_root, "strict-out");
        (exit, stdout, stderr) = await SensMerge("merge", Config("strict.yaml", Yaml("clean")), "--out", strictOut, "--strict");

        Assert.Equal(1, exit);
        Assert.Contains("strict mode", stderr, StringComparison.Ordinal);
        Assert.Contains($"'{UpProj}'", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(strictOut));
        Assert.Empty(Directory.GetDirectories(_root, "strict-out*"));
        using var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = _registry });
        var failed = Assert.Single(await registry.ListAsync(new MergeQuery { Status = MergeStatus.Failed }));
        var failedRecord = (await registry.GetAsync(failed.Id))!;
        Assert.Null(failedRecord.Outputs);
        Assert.Contains("strict mode", failedRecord.Error!.Message, StringComparison.Ordinal);
        Assert.Equal(MergeWarningKinds.NonFinite, Assert.Single(failedRecord.Warnings).Kind);
    }

    private static int Occurrences(string text, string part)
    {
        var count = 0;
        for (var at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + part.Length, StringComparison.Ordinal))
        {
            count++;
        }
        return count;
    }
}
