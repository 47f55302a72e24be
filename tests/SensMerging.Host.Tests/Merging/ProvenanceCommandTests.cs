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

    /// <summary>
    /// A base and two experts (tiny llamas) with calibration files of <paramref name="written"/> samples each, and the
    /// config's lines up to its decorators: task_arithmetic, each expert's calibration block asking for
    /// <paramref name="samples"/> samples of at most <paramref name="maxLength"/> tokens.
    /// </summary>
    private string SensModels(int written, int samples, int maxLength)
    {
        var models = Path.Combine(_root, "llamas");
        TinyLlama.Write(Path.Combine(models, "base"), 10);
        TinyLlama.Write(Path.Combine(models, "math"), 11);
        TinyLlama.Write(Path.Combine(models, "code"), 12);
        var mathData = TinyLlama.Calibration(Path.Combine(models, "math.jsonl"), "add", written);
        var codeData = TinyLlama.Calibration(Path.Combine(models, "code.jsonl"), "print", written);
        return $$"""
            merge_method: task_arithmetic
            base_model: {{Path.Combine(models, "base")}}
            models:
              - model: {{Path.Combine(models, "math")}}
                calibration: {path: {{mathData}}, samples: {{samples}}, max_length: {{maxLength}}}
              - model: {{Path.Combine(models, "code")}}
                calibration: {path: {{codeData}}, samples: {{samples}}, max_length: {{maxLength}}}

            """;
    }

    [Fact]
    public async Task A_sens_merge_records_the_calibration_in_effect_and_each_table_once()
    {
        // The calibration blocks ask for 20 samples of at most 64 tokens; the decorator keeps its defaults (100, 256).
        var config = Config("sens.yaml", SensModels(30, 20, 64) + """
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
    public async Task Sens_parameters_given_per_layer_group_are_applied_and_recorded_and_a_filter_for_tensor_names_is_refused()
    {
        var models = SensModels(12, 8, 32);
        string Yaml(string temperature, string taskScaling) => models + $$"""
            decorators:
              - name: sens
                parameters:
                  temperature: {{temperature}}
                  task_scaling: {{taskScaling}}
            """;

        // Two blocks: a gradient [0.5, 1.5] gives block 0 (depth 0) 0.5 and block 1 (depth 1) 1.5; the groups outside the
        // blocks take its first value. The head's task scaling is off through a filter list.
        var (exit, stdout, stderr) = await SensMerge("merge", Config("groups.yaml", Yaml("[0.5, 1.5]", "[{filter: lm_head, value: false}, {value: true}]")),
            "--out", Path.Combine(_root, "groups-out"));

        Assert.True(exit == 0, stderr + stdout);
        var record = await RecordAsync(stdout.Split("registry id ")[1].Trim());
        var coefficients = record.Coefficients ?? throw new InvalidOperationException("no coefficients recorded");
        var groups = coefficients.LayerGroups;
        Assert.Equal(["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"], groups);
        var expectedT = new Dictionary<string, double>
        {
            ["model.embed_tokens"] = 0.5, ["model.layers.0"] = 0.5, ["model.layers.1"] = 1.5, ["model.norm"] = 0.5, ["lm_head"] = 0.5,
        };
        var settings = record.DecoratorSettings["sens"];
        Assert.Equal(expectedT, settings["temperature"].AsMap.ToDictionary(kv => kv.Key, kv => kv.Value.AsDouble));
        Assert.Equal(groups.Select(g => g != "lm_head"), groups.Select(g => settings["task_scaling"].AsMap[g].AsBoolean));
        // The config's own values are recorded as written: a list and a filter list.
        Assert.Equal([0.5, 1.5], record.Decorators[0].Parameters["temperature"].AsList.Select(v => v.AsDouble));

        // Each group's coefficients are K softmax(alpha tau / T_group) of the recorded sensitivity table (alpha = S / ||S||,
        // 1 in the head) and tau, recomputed here by hand.
        var s = record.ScoreTables.Single(t => t.Scorer == "sensitivity");
        var tau = coefficients.Tables.Single(t => t.Scorer == "tau").Values[0];
        for (var l = 0; l < groups.Count; l++)
        {
            var x = Enumerable.Range(0, 2).Select(i =>
                (groups[l] == "lm_head" ? 1.0 : s.Values[i][l] / Math.Sqrt(s.Values[i].Sum(v => v * v))) * tau[i] / expectedT[groups[l]]).ToArray();
            var e = x.Select(Math.Exp).ToArray();
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(2 * e[i] / e.Sum(), coefficients.Values[i][l], 12);
            }
        }

        // A filter written for tensor names matches no layer group: refused before anything is merged, naming it.
        (exit, stdout, stderr) = await SensMerge("merge", Config("mlp.yaml", Yaml("[{filter: mlp, value: 4.0}, {value: 2.0}]", "true")),
            "--out", Path.Combine(_root, "mlp-out"));
        Assert.NotEqual(0, exit);
        Assert.Contains("filter 'mlp' of parameter 'temperature' (decorator 'sens') matches no layer group", stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(_root, "mlp-out")) && Directory.EnumerateFileSystemEntries(Path.Combine(_root, "mlp-out")).Any());
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
