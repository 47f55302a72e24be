using System.Text.Json;
using System.Text.RegularExpressions;

namespace SensMerging.Registry.Tests;

public sealed class QueryTests
{
    [Fact]
    public async Task Filters_by_model_strategy_since_and_status()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var ties = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "ties"), "out-ties");
        var dare = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "dare_ties", ["org/math@v2", "org/poetry"]), "out-dare", "me/dare-merge");
        var running = await registry.BeginAsync(Samples.Draft(temp, "task_arithmetic", ["org/code@v1"]));
        var failed = await registry.BeginAsync(Samples.Draft(temp, "ties", ["org/poetry"]));
        await registry.FailAsync(failed.Id, new InvalidDataException("bad header"));

        static string[] Ids(IReadOnlyList<MergeSummary> s) => [.. s.Select(x => x.Id).Order(StringComparer.Ordinal)];
        string[] Expect(params MergeRecord[] r) => [.. r.Select(x => x.Id).Order(StringComparer.Ordinal)];

        Assert.Equal(4, (await registry.ListAsync(new MergeQuery())).Count);
        Assert.Equal(Expect(ties, failed), Ids(await registry.ListAsync(new MergeQuery { Strategy = "TIES" })));
        Assert.Equal(Expect(dare), Ids(await registry.ListAsync(new MergeQuery { Strategy = "dare_ties" })));
        Assert.Equal(Expect(running), Ids(await registry.ListAsync(new MergeQuery { Status = MergeStatus.Running })));
        Assert.Equal(Expect(failed), Ids(await registry.ListAsync(new MergeQuery { Status = MergeStatus.Failed })));
        Assert.Equal(Expect(ties, dare), Ids(await registry.ListAsync(new MergeQuery { Status = MergeStatus.Succeeded })));

        // Model: repo id with and without revision, commit, alias, local folder, output folder, served repo id.
        Assert.Equal(Expect(ties, dare), Ids(await registry.ListAsync(new MergeQuery { Model = "org/math" })));
        Assert.Equal(Expect(ties, dare), Ids(await registry.ListAsync(new MergeQuery { Model = "ORG/Math" })));
        Assert.Equal(Expect(ties), Ids(await registry.ListAsync(new MergeQuery { Model = "org/math@main" })));
        Assert.Equal(Expect(ties), Ids(await registry.ListAsync(new MergeQuery { Model = "org/math@" + Samples.Sha("org/math@main")[..40] })));
        Assert.Equal(Expect(ties, running), Ids(await registry.ListAsync(new MergeQuery { Model = "org/code@v1" })));
        Assert.Equal(Expect(ties), Ids(await registry.ListAsync(new MergeQuery { Model = temp.File("experts/knowledge") })));
        Assert.Equal(Expect(dare), Ids(await registry.ListAsync(new MergeQuery { Model = temp.File("out-dare") + "/" })));
        Assert.Equal(Expect(dare), Ids(await registry.ListAsync(new MergeQuery { Model = "me/dare-merge" })));
        Assert.Equal(Expect(dare, failed), Ids(await registry.ListAsync(new MergeQuery { Model = "org/poetry", Limit = 10 })));
        Assert.Equal(Expect(failed), Ids(await registry.ListAsync(new MergeQuery { Model = "org/poetry", Status = MergeStatus.Failed })));
        Assert.Equal(Expect(dare), Ids(await registry.ListAsync(new MergeQuery { Model = "org/poetry", Strategy = "dare_ties" })));
        Assert.Empty(await registry.ListAsync(new MergeQuery { Model = "org/unknown" }));

        // Since and limit; newest first.
        var all = await registry.ListAsync(MergeQuery.All);
        Assert.Equal(all.OrderByDescending(s => s.CreatedAt).Select(s => s.Id), all.Select(s => s.Id));
        Assert.Equal(all.Take(2).Select(s => s.Id), (await registry.ListAsync(new MergeQuery { Limit = 2 })).Select(s => s.Id));
        var cut = running.CreatedAt;
        Assert.Equal(Expect(running, failed), Ids(await registry.ListAsync(new MergeQuery { Since = cut })));
        Assert.Empty(await registry.ListAsync(new MergeQuery { Since = DateTime.UtcNow.AddMinutes(1) }));

        var summary = all.Single(s => s.Id == dare.Id);
        Assert.Equal("sens(dare_ties)", summary.Method);
        Assert.Equal("org/base@main", summary.Inputs[0]);
        Assert.Equal(dare.Outputs!.TotalBytes, summary.OutputBytes);
        Assert.Equal("bad header", all.Single(s => s.Id == failed.Id).Error);
    }

    [Fact]
    public async Task Filters_by_decorator_text_and_date_range_sorts_by_age_and_score_and_pages()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var sens = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "ties"), "out-sens");
        var plain = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "dare_ties", ["org/poetry"]) with { Decorators = [], Tags = ["Ablation:tau-off"] }, "out-plain");
        var third = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "linear", ["org/code"]) with { Decorators = [] }, "out-third", "me/third");
        var now = DateTime.UtcNow;
        await registry.AddEvaluationAsync(sens.Id, new EvaluationResult(temp.File("out-sens"), "math", "exact_match", 0.5, 10, now));
        await registry.AddEvaluationAsync(plain.Id, new EvaluationResult(temp.File("out-plain"), "math", "exact_match", 0.9, 10, now));
        await registry.AddEvaluationAsync(plain.Id, new EvaluationResult(temp.File("out-plain"), "code", "pass_at_1", 0.1, 10, now));
        // An evaluation of an input is not the merged model's score.
        await registry.AddEvaluationAsync(third.Id, new EvaluationResult("org/code", "math", "exact_match", 1.0, 10, now));

        async Task<string[]> Ids(MergeQuery q) => [.. (await registry.ListAsync(q)).Select(s => s.Id)];

        Assert.Equal([sens.Id], await Ids(new MergeQuery { Decorator = "SENS" }));
        Assert.Equal([plain.Id], await Ids(new MergeQuery { Search = "ABLATION:tau" }));
        Assert.Equal([plain.Id], await Ids(new MergeQuery { Search = "POETRY" }));
        Assert.Equal([third.Id], await Ids(new MergeQuery { Search = "me/third" }));
        Assert.Equal([third.Id], await Ids(new MergeQuery { Search = third.Id[^6..] }));
        Assert.Equal([plain.Id], await Ids(new MergeQuery { Model = "org/poetry", Search = "tau" }));
        Assert.Empty(await Ids(new MergeQuery { Model = "org/poetry", Decorator = "sens" }));
        Assert.Equal([sens.Id, plain.Id, third.Id], await Ids(new MergeQuery { Sort = MergeSort.Oldest }));
        Assert.Equal([plain.Id, third.Id], await Ids(new MergeQuery { Sort = MergeSort.Oldest, Offset = 1 }));
        Assert.Equal([plain.Id], await Ids(new MergeQuery { Sort = MergeSort.Oldest, Offset = 1, Limit = 1 }));
        Assert.Equal([plain.Id, sens.Id], await Ids(new MergeQuery { Until = third.CreatedAt }));
        Assert.Equal([plain.Id], await Ids(new MergeQuery { Since = plain.CreatedAt, Until = third.CreatedAt }));
        Assert.Equal([plain.Id, sens.Id, third.Id], await Ids(new MergeQuery { Sort = MergeSort.Score, ScoreKey = "math/exact_match" }));
        Assert.Equal([sens.Id, third.Id], await Ids(new MergeQuery { Sort = MergeSort.Score, Model = "org/code", ScoreKey = "math/exact_match" }));
        Assert.Equal([plain.Id, third.Id, sens.Id], await Ids(new MergeQuery { Sort = MergeSort.Score, ScoreKey = "code/pass_at_1" }));

        var summary = (await registry.ListAsync(new MergeQuery { Search = plain.Id })).Single();
        Assert.Equal(new Dictionary<string, double> { ["math/exact_match"] = 0.9, ["code/pass_at_1"] = 0.1 }, summary.Scores);
        Assert.Empty((await registry.ListAsync(new MergeQuery { Search = third.Id })).Single().Scores);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => registry.ListAsync(new MergeQuery { Offset = -1 }));
    }

    [Fact]
    public async Task Searches_answered_from_the_in_process_index_see_writes_of_another_connection()
    {
        using var temp = new TempFolder();
        using var reader = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        using var writer = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var first = await Samples.CompletedAsync(writer, temp, Samples.Draft(temp, "ties", ["org/poetry"]), "out-1");
        Assert.Equal([first.Id], (await reader.ListAsync(new MergeQuery { Search = "poetry" })).Select(s => s.Id));

        // Another connection (as another process would) adds a merge, tags one and fails one: the next searches see it.
        var second = await Samples.CompletedAsync(writer, temp, Samples.Draft(temp, "ties", ["org/poetry"]), "out-2");
        Assert.Equal([second.Id, first.Id], (await reader.ListAsync(new MergeQuery { Search = "poetry" })).Select(s => s.Id));
        await writer.UpdateAsync(first.Id, r => r with { Tags = ["keeper"] });
        Assert.Equal([first.Id], (await reader.ListAsync(new MergeQuery { Search = "KEEPER" })).Select(s => s.Id));
        Assert.Equal([first.Id], (await reader.ListAsync(new MergeQuery { Model = "org/poetry", Search = "keeper" })).Select(s => s.Id));
        var running = await writer.BeginAsync(Samples.Draft(temp, "linear", ["org/poetry"]));
        await writer.FailAsync(running.Id, new InvalidOperationException("boom"));
        Assert.Equal([running.Id], (await reader.ListAsync(new MergeQuery { Search = "poetry", Status = MergeStatus.Failed })).Select(s => s.Id));
        Assert.Equal([running.Id, second.Id, first.Id], (await reader.ListAsync(new MergeQuery { Model = "org/poetry" })).Select(s => s.Id));
        Assert.Equal([first.Id, second.Id, running.Id], (await reader.ListAsync(new MergeQuery { Model = "org/poetry", Sort = MergeSort.Oldest })).Select(s => s.Id));
        Assert.Equal([second.Id, first.Id], (await reader.ListAsync(new MergeQuery { Offset = 1, Search = "org/" })).Select(s => s.Id));
    }

    [Fact]
    public async Task Get_accepts_unique_prefix_and_rejects_ambiguous_one()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var a = await registry.BeginAsync(Samples.Draft(temp) with { Id = "m-test-aaa1" });
        var b = await registry.BeginAsync(Samples.Draft(temp) with { Id = "m-test-aab2" });
        Assert.Equal(a.Id, (await registry.GetAsync("m-test-aaa"))!.Id);
        Assert.Equal(b.Id, (await registry.GetAsync("m-test-aab2"))!.Id);
        var ex = await Assert.ThrowsAsync<AmbiguousMergeIdException>(() => registry.GetAsync("m-test-aa"));
        Assert.Equal(2, ex.Matches.Count);
        Assert.Null(await registry.GetAsync("m-none"));
        await Assert.ThrowsAsync<ArgumentException>(() => registry.BeginAsync(Samples.Draft(temp) with { Id = "m-test-aaa1" }));
        await Assert.ThrowsAsync<MergeNotFoundException>(() => registry.ExportAsync("m-none"));
    }

    [Fact]
    public async Task Lineage_finds_producer_consumers_and_ancestry()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var first = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "ties"), "gen1", "me/gen1");
        // The second merge uses the first one's output (served repo) as its base; the third uses its folder as an expert.
        var second = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "dare_ties", ["org/poetry"], baseRef: "me/gen1@main"), "gen2");
        var third = await registry.BeginAsync(Samples.Draft(temp, "linear", ["org/poetry", temp.File("gen2")]));

        var lineage = await registry.LineageAsync("me/gen1");
        Assert.Equal(first.Id, Assert.Single(lineage.ProducedBy).Id);
        Assert.Equal(second.Id, Assert.Single(lineage.UsedBy).Id);

        var gen2 = await registry.LineageAsync(temp.File("gen2"));
        Assert.Equal(second.Id, Assert.Single(gen2.ProducedBy).Id);
        Assert.Equal(third.Id, Assert.Single(gen2.UsedBy).Id);
        var root = Assert.Single(gen2.Ancestry);
        Assert.Equal(second.Id, root.Merge.Id);
        var baseInput = root.Inputs.Single(i => i.Reference == "me/gen1@main");
        Assert.Equal(first.Id, Assert.Single(baseInput.ProducedBy).Merge.Id);
        Assert.Empty(root.Inputs.Single(i => i.Reference == "org/poetry").ProducedBy);

        var text = RegistryText.Lineage(gen2);
        Assert.Contains(first.Id, text, StringComparison.Ordinal);
        Assert.Contains(third.Id, text, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(RegistryJson.Serialize(gen2));
        Assert.Equal(second.Id, json.RootElement.GetProperty("producedBy")[0].GetProperty("id").GetString());

        var poetry = await registry.LineageAsync("org/poetry");
        Assert.Empty(poetry.ProducedBy);
        Assert.Equal(2, poetry.UsedBy.Count);
    }

    [Fact]
    public async Task Lineage_graph_walks_both_ways_within_its_bounds_and_counts_what_it_cuts()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        // a -> b (by served repo id) -> four merges of b's folder (one failed); d also uses a, but is no relative of b.
        var a = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "ties"), "a", "me/a");
        var b = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "dare_ties", ["org/poetry"], baseRef: "me/a@main"), "b");
        var users = new List<MergeRecord>();
        for (var i = 0; i < 3; i++)
        {
            users.Add(await registry.BeginAsync(Samples.Draft(temp, "linear", ["org/poetry", temp.File("b")]) with { CreatedAt = DateTime.UtcNow.AddMinutes(i + 1) }));
        }
        var failed = await registry.BeginAsync(Samples.Draft(temp, "ties", [temp.File("b")]) with { CreatedAt = DateTime.UtcNow.AddMinutes(10) });
        await registry.FailAsync(failed.Id, new InvalidDataException("bad header"));
        var d = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "linear", [temp.File("a")]), "d");

        var graph = (await registry.LineageGraphAsync(b.Id, new LineageBounds()))!;
        Assert.Equal(b.Id, graph.Root.Id);
        Assert.Equal(b.Id, graph.Nodes[0].Merge.Id);
        var generations = graph.Nodes.ToDictionary(n => n.Merge.Id, n => n.Generation);
        Assert.Equal(-1, generations[a.Id]);
        Assert.All(users, u => Assert.Equal(1, generations[u.Id]));
        Assert.Equal(1, generations[failed.Id]);
        Assert.False(generations.ContainsKey(d.Id), "a sibling (another use of an ancestor) is not in the lineage");
        Assert.Equal(6, graph.Nodes.Count);
        Assert.Contains(new LineageGraphEdge(a.Id, b.Id, "me/a@main"), graph.Edges);
        Assert.Contains(new LineageGraphEdge(b.Id, failed.Id, temp.File("b")), graph.Edges);
        Assert.Equal(5, graph.Edges.Count);
        Assert.Empty(graph.Cuts);

        // Width 2: the two newest users of b are kept, two are counted.
        var narrow = (await registry.LineageGraphAsync(b.Id, new LineageBounds { Width = 2 }))!;
        Assert.Equal([failed.Id, users[2].Id], narrow.Nodes.Where(n => n.Generation == 1).Select(n => n.Merge.Id));
        Assert.Equal(new LineageGraphCut(1, 2, false), Assert.Single(narrow.Cuts));
        Assert.All(narrow.Edges, e => Assert.True(narrow.Nodes.Any(n => n.Merge.Id == e.To) && narrow.Nodes.Any(n => n.Merge.Id == e.From)));

        // Depth 1 from a user: b is kept, a (two generations back) is counted.
        var shallow = (await registry.LineageGraphAsync(users[0].Id, new LineageBounds { Depth = 1 }))!;
        Assert.Equal([users[0].Id, b.Id], shallow.Nodes.Select(n => n.Merge.Id));
        Assert.Equal(new LineageGraphCut(-2, 1, false), Assert.Single(shallow.Cuts));

        // A failed merge has ancestors, transitively, and no descendants.
        var ofFailed = (await registry.LineageGraphAsync(failed.Id, new LineageBounds()))!;
        Assert.Equal(new[] { (failed.Id, 0), (b.Id, -1), (a.Id, -2) }, ofFailed.Nodes.Select(n => (n.Merge.Id, n.Generation)));

        // A merge of b's output and a's: a is both a parent and a grandparent; one generation deep, every edge is there.
        var both = await registry.BeginAsync(Samples.Draft(temp, "linear", [temp.File("b"), temp.File("a")]));
        var diamond = (await registry.LineageGraphAsync(both.Id, new LineageBounds { Depth = 1 }))!;
        Assert.Equal(new[] { (both.Id, 0), (b.Id, -1), (a.Id, -1) }, diamond.Nodes.Select(n => (n.Merge.Id, n.Generation)));
        Assert.Equal(
            new[] { (a.Id, b.Id), (a.Id, both.Id), (b.Id, both.Id) }.Order(),
            diamond.Edges.Select(e => (e.From, e.To)).Order());
        Assert.Empty(diamond.Cuts);

        Assert.Null(await registry.LineageGraphAsync("m-none", new LineageBounds()));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => registry.LineageGraphAsync(b.Id, new LineageBounds { Width = 0 }));
        Assert.Equal(a.Id, Assert.Single(await registry.ProducersAsync("me/a")).Id);
        Assert.Equal(b.Id, Assert.Single(await registry.ProducersAsync(temp.File("b"))).Id);
        Assert.Empty(await registry.ProducersAsync("org/poetry"));
    }

    [Fact]
    public async Task Diff_reports_parameters_inputs_and_coefficients()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var a = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp, "ties"), "a");
        var draftB = Samples.Draft(temp, "ties", ["org/math@v9", "org/code@v1", "./experts/knowledge"], seed: 7);
        var b = await registry.BeginAsync(draftB with
        {
            Parameters = new Dictionary<string, ParameterValue>(draftB.Parameters) { ["lambda"] = 0.8, ["k"] = 3.0 },
        });
        var experts = new[] { "math", "code", "knowledge" };
        var coefB = Samples.Coefficients(experts);
        coefB.Values[1][2] += 0.5;
        b = await registry.UpdateAsync(b.Id, r => r with { Coefficients = coefB });

        var diff = MergeDiff.Compare(a, b);
        Assert.Contains(diff.Fields, f => f.Name == "seed" && f.Left == "42" && f.Right == "7");
        Assert.Contains(diff.Parameters, p => p.Name == "lambda" && p.Left == "1.0" && p.Right == "0.8");
        Assert.Contains(diff.Parameters, p => p.Name == "k" && p.Left == "3" && p.Right == "3.0");
        var math = Assert.Single(diff.Inputs);
        Assert.Equal("math", math.Name);
        Assert.Contains(math.Details, d => d.Name == "reference" && d.Left == "org/math@main" && d.Right == "org/math@v9");
        Assert.Contains(math.Details, d => d.Name == "resolvedCommit");
        var c = Assert.Single(diff.Coefficients);
        Assert.Equal(("code", Samples.Groups[2]), (c.Expert, c.LayerGroup));
        Assert.Equal(0.5, c.Delta!.Value, 12);

        var text = diff.ToText();
        Assert.Contains("lambda", text, StringComparison.Ordinal);
        Assert.Contains("org/math@v9", text, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(RegistryJson.Serialize(diff));
        Assert.Equal(a.Id, json.RootElement.GetProperty("leftId").GetString());
        Assert.True(MergeDiff.Compare(a, a).IsEmpty);
    }

    [Fact]
    public async Task Export_is_valid_json_whose_fields_are_documented()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        var rec = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out");
        await registry.AddEvaluationAsync(temp.File("out"), new EvaluationResult("out", "code", "exact_match", 0.5, 10, default));
        var json = await registry.ExportAsync(rec.Id[..^2]);
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        Assert.Equal("sensmerge.merge", root.GetProperty("kind").GetString());
        Assert.Equal(LiteDbMergeRegistry.CurrentSchemaVersion, root.GetProperty("schemaVersion").GetInt32());
        var record = root.GetProperty("record");
        Assert.Equal(rec.Id, record.GetProperty("id").GetString());
        Assert.Equal("succeeded", record.GetProperty("status").GetString());
        Assert.Equal("base", record.GetProperty("inputs")[0].GetProperty("role").GetString());
        Assert.Equal("taskSpecific", record.GetProperty("scoreTables")[0].GetProperty("kind").GetString());
        Assert.Equal(1, record.GetProperty("evaluations").GetArrayLength());
        var back = RegistryJson.ReadExport(json);
        Assert.Equal(RegistryJson.Serialize(rec with { Evaluations = back.Record.Evaluations }), RegistryJson.Serialize(back.Record));

        // Every property name in the export (and in list/diff/lineage JSON) appears in docs/registry.md.
        var docs = await File.ReadAllTextAsync(Path.Combine(Samples.RepoRoot(), "docs", "registry.md"));
        var documented = Regex.Matches(docs, "`([A-Za-z0-9]+)`").Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
        var names = new SortedSet<string>(StringComparer.Ordinal);
        CollectNames(root, names, skipMapsUnder: ["parameters", "modelParameters", "decoratorSettings", "durations", "details"]);
        var list = await registry.ListAsync(new MergeQuery());
        using (var listDoc = JsonDocument.Parse(RegistryJson.Serialize(list)))
        {
            CollectNames(listDoc.RootElement, names, ["scores"]);
        }
        using (var diffDoc = JsonDocument.Parse(RegistryJson.Serialize(MergeDiff.Compare(rec, rec with { Seed = 1 }))))
        {
            CollectNames(diffDoc.RootElement, names, []);
        }
        var missing = names.Where(n => !documented.Contains(n)).ToList();
        Assert.True(missing.Count == 0, "fields not documented in docs/registry.md: " + string.Join(", ", missing));
    }

    private static void CollectNames(JsonElement e, ISet<string> names, string[] skipMapsUnder)
    {
        if (e.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in e.EnumerateObject())
            {
                names.Add(p.Name);
                if (!skipMapsUnder.Contains(p.Name))
                {
                    CollectNames(p.Value, names, skipMapsUnder);
                }
                else if (p.Name == "modelParameters" || p.Name == "decoratorSettings")
                {
                    // Map of maps: keys are model or decorator names, then parameter names.
                }
            }
        }
        else if (e.ValueKind == JsonValueKind.Array)
        {
            foreach (var item in e.EnumerateArray())
            {
                CollectNames(item, names, skipMapsUnder);
            }
        }
    }
}
