using System.Security.Cryptography;
using System.Text.Json;
using SensMerging.Abstractions;

namespace SensMerging.Registry.Tests;

public sealed class RecordRoundTripTests
{
    [Fact]
    public async Task A_record_with_every_field_round_trips_with_true_values()
    {
        using var temp = new TempFolder();
        var draft = Samples.Draft(temp);
        MergeRecord completed;
        using (var registry = LiteDbMergeRegistry.Open(temp.File("reg/merges.db")))
        {
            completed = await Samples.CompletedAsync(registry, temp, draft, "out1", "me/merged-1");
            await registry.AddEvaluationAsync(completed.Id, new EvaluationResult("out1", "math", "exact_match", 0.4375, 64, default));
        }

        // Reopen: everything comes from the file.
        using var reopened = LiteDbMergeRegistry.Open(temp.File("reg/merges.db"));
        var r = await reopened.GetAsync(completed.Id);
        Assert.NotNull(r);
        Assert.Equal(MergeStatus.Succeeded, r.Status);
        Assert.Matches("^m-\\d{8}-\\d{6}-[0-9a-f]{6}$", r.Id);
        Assert.Equal(DateTimeKind.Utc, r.CreatedAt.Kind);
        Assert.Equal(completed.CreatedAt, r.CreatedAt);
        Assert.Equal(completed.FinishedAt, r.FinishedAt);
        Assert.True(r.FinishedAt >= r.StartedAt);
        Assert.Equal(Environment.ProcessId, r.Owner!.ProcessId);
        Assert.Equal(draft.ConfigText, r.ConfigText);
        Assert.Equal(draft.ResolvedConfig, r.ResolvedConfig);
        Assert.Equal(draft.Strategy, r.Strategy);
        Assert.Equal(draft.Decorators[0].Plugin, r.Decorators[0].Plugin);
        Assert.Equal(2.0, r.Decorators[0].Parameters["temperature"].AsDouble);
        Assert.Equal(draft.Scorers, r.Scorers);
        Assert.Equal(42, r.Seed);
        Assert.Equal("bfloat16", r.Dtype);
        Assert.Equal("float16", r.OutDtype);

        // Inputs: hashes are the real files' hashes.
        Assert.Equal(draft.Inputs.Count, r.Inputs.Count);
        for (var i = 0; i < draft.Inputs.Count; i++)
        {
            var (want, got) = (draft.Inputs[i], r.Inputs[i]);
            Assert.Equal(want.Reference, got.Reference);
            Assert.Equal(want.RequestedRevision, got.RequestedRevision);
            Assert.Equal(want.ResolvedCommit, got.ResolvedCommit);
            Assert.Equal(want.Role, got.Role);
            Assert.Equal(want.Files, got.Files);
            foreach (var f in got.Files)
            {
                var bytes = await File.ReadAllBytesAsync(Path.Combine(got.LocalPath!, f.Path));
                Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), f.Sha256);
                Assert.Equal(bytes.Length, f.Size);
            }
        }

        // Parameters keep their kinds and exact values.
        Assert.Equal(ParameterValueKind.Float, r.Parameters["lambda"].Kind);
        Assert.Equal(1.0, r.Parameters["lambda"].AsDouble);
        Assert.Equal(ParameterValueKind.Integer, r.Parameters["k"].Kind);
        Assert.Equal(3, r.Parameters["k"].AsInteger);
        Assert.True(r.Parameters["normalize"].AsBoolean);
        Assert.Equal(0.1 + 0.2, r.Parameters["epsilon"].AsDouble);
        Assert.Equal(1e-300, r.Parameters["tiny"].AsDouble);
        Assert.Equal("x y", r.Parameters["name"].AsString);
        Assert.Equal([0.25, 0.5, 1.0], r.Parameters["weights"].AsList.Select(v => v.AsDouble));
        Assert.Equal(ParameterValueKind.Float, r.Parameters["weights"].AsList[2].Kind);
        Assert.Equal("self_attn", r.Parameters["filters"].AsList[0].AsMap["filter"].AsString);
        Assert.Equal(draft.Parameters.Count, r.Parameters.Count);
        Assert.True(draft.Parameters.All(kv => r.Parameters[kv.Key].Equals(kv.Value)));
        Assert.Equal(0.7, r.ModelParameters["math"]["density"].AsDouble);
        Assert.True(r.DecoratorSettings["sens"]["use_tau"].AsBoolean);

        // Scores and coefficients: exact doubles.
        var experts = new[] { "math", "code", "knowledge" };
        var sens = Samples.Sensitivity(experts);
        Assert.Equal("sensitivity", r.ScoreTables[0].Scorer);
        Assert.Equal(ScorerKind.TaskSpecific, r.ScoreTables[0].Kind);
        Assert.Equal(sens.Rows, r.ScoreTables[0].Rows);
        Assert.Equal(sens.Columns, r.ScoreTables[0].Columns);
        for (var e = 0; e < experts.Length; e++)
        {
            Assert.Equal(sens.Values[e], r.ScoreTables[0].Values[e]);
        }
        Assert.Equal(10, r.ScoreTables[0].Details["samples"]);
        var coef = Samples.Coefficients(experts);
        Assert.Equal(coef.Experts, r.Coefficients!.Experts);
        Assert.Equal(coef.LayerGroups, r.Coefficients.LayerGroups);
        Assert.Equal(coef.Values[2], r.Coefficients.Values[2]);
        Assert.Equal(coef.Get("code", "model.layers.1"), r.Coefficients.Get("code", "model.layers.1"));
        Assert.Equal(coef.Tables[1].Values[2], r.Coefficients.Tables[1].Values[2]);
        Assert.Equal(ScorerKind.CrossTask, r.Coefficients.Tables[1].Kind);
        Assert.Equal("sens", r.Coefficients.Decorator);

        // Outputs: folder, real hashes, totals.
        var outputs = r.Outputs!;
        Assert.Equal(temp.File("out1"), outputs.Folder);
        Assert.Equal("me/merged-1", outputs.RepoId);
        Assert.Equal(12, outputs.TensorCount);
        Assert.Equal(outputs.Files.Sum(f => f.Size), outputs.TotalBytes);
        foreach (var f in outputs.Files)
        {
            var bytes = await File.ReadAllBytesAsync(Path.Combine(outputs.Folder, f.Path));
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), f.Sha256);
        }

        var ev = Assert.Single(r.Evaluations);
        Assert.Equal(("math", "exact_match", 0.4375, 64), (ev.Task, ev.Metric, ev.Value, ev.Samples));
        Assert.Equal(DateTimeKind.Utc, ev.RecordedAt.Kind);
        Assert.Equal(3.0, r.Durations[Phases.Merge]);
        Assert.Equal(0.25, r.Durations[Phases.Hashing]);
        Assert.True(r.Durations[Phases.Total] >= 0);
        Assert.Equal(draft.Tags, r.Tags);

        // The stored record serializes exactly like the in-memory one.
        Assert.Equal(RegistryJson.Serialize(completed with { Evaluations = r.Evaluations }), RegistryJson.Serialize(r));
    }

    [Fact]
    public void Parameter_values_keep_their_kind_through_json()
    {
        var values = new Dictionary<string, ParameterValue>
        {
            ["f"] = 1.0,
            ["i"] = 1,
            ["big"] = long.MaxValue,
            ["neg"] = -2.5e-7,
            ["b"] = false,
            ["s"] = "1.0",
            ["nan"] = double.NaN,
            ["inf"] = double.NegativeInfinity,
            ["n"] = ParameterValue.Null,
            ["list"] = ParameterValue.FromObject(new object[] { 1, 2.0, "a", true }),
            ["map"] = ParameterValue.FromObject(new Dictionary<string, object> { ["x"] = 0.1f, ["y"] = new[] { 1L } }),
        };
        var json = RegistryJson.Serialize(values);
        Assert.Contains("\"f\": 1.0", json, StringComparison.Ordinal);
        Assert.Contains("\"i\": 1,", json, StringComparison.Ordinal);
        var back = RegistryJson.Deserialize<Dictionary<string, ParameterValue>>(json);
        foreach (var (k, v) in values)
        {
            Assert.Equal(v, back[k]);
        }
        Assert.Equal(ParameterValueKind.Integer, back["list"].AsList[0].Kind);
        Assert.Equal(ParameterValueKind.Float, back["list"].AsList[1].Kind);
        Assert.Equal(0.1, back["map"].AsMap["x"].AsDouble);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
    }
}
