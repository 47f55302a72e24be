using System.Text.Json;
using LiteDB;
using SensMerging.Abstractions;

namespace SensMerging.Registry.Tests;

/// <summary>What a record says is what happened, once: data warnings, one line per merge in lists, each table and each setting once.</summary>
public sealed class RecordTruthTests
{
    private static readonly MergeWarning[] SomeWarnings =
    [
        new(MergeWarningKinds.NonFinite, "tensor 'model.layers.0.mlp.up_proj.weight' of model 'math': 3 NaN, 1 Inf")
        {
            Model = "math",
            Tensors = ["model.layers.0.mlp.up_proj.weight"],
            NanCount = 3,
            InfCount = 1,
        },
        new(MergeWarningKinds.ExtraTensors, "model 'code' has 1 tensor the base lacks, not merged: extra.bias")
        {
            Model = "code",
            Tensors = ["extra.bias"],
        },
    ];

    [Fact]
    public async Task Warnings_are_stored_shown_exported_and_diffed()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        MergeRecord plain;
        string id;
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            plain = await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "plain");
            var begun = await registry.BeginAsync(Samples.Draft(temp));
            await registry.UpdateAsync(begun.Id, r => r with { Warnings = SomeWarnings });
            id = (await registry.CompleteAsync(begun.Id, Samples.Outputs(temp.File("warned"), "warned"), new Dictionary<string, double>())).Id;
        }

        using var reopened = LiteDbMergeRegistry.Open(db);
        var record = await reopened.GetAsync(id) ?? throw new InvalidOperationException("record lost");
        Assert.Equal(SomeWarnings.Length, record.Warnings.Count);
        for (var i = 0; i < SomeWarnings.Length; i++)
        {
            Assert.Equal(SomeWarnings[i] with { Tensors = [] }, record.Warnings[i] with { Tensors = [] });
            Assert.Equal(SomeWarnings[i].Tensors, record.Warnings[i].Tensors);
        }
        Assert.Empty((await reopened.GetAsync(plain.Id))!.Warnings);

        var show = RegistryText.Show(record);
        Assert.Contains("Warnings (2)", show, StringComparison.Ordinal);
        Assert.Contains("nonFinite: " + SomeWarnings[0].Message, show, StringComparison.Ordinal);
        Assert.Contains("extraTensors: " + SomeWarnings[1].Message, show, StringComparison.Ordinal);
        Assert.DoesNotContain("Warnings", RegistryText.Show(plain), StringComparison.Ordinal);

        using var export = JsonDocument.Parse(await reopened.ExportAsync(id));
        var warning = export.RootElement.GetProperty("record").GetProperty("warnings")[0];
        Assert.Equal("nonFinite", warning.GetProperty("kind").GetString());
        Assert.Equal(3, warning.GetProperty("nanCount").GetInt64());
        Assert.Equal(1, warning.GetProperty("infCount").GetInt64());
        Assert.Equal("math", warning.GetProperty("model").GetString());

        Assert.Contains(MergeDiff.Compare(plain, record).Fields, f => f.Name == "warnings" && f.Left == "0" && f.Right == "2");
    }

    [Fact]
    public async Task A_record_stored_before_warnings_existed_reads_with_none()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        string id;
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            id = (await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out")).Id;
        }
        // Remove the field from the stored document, as an older sensmerge wrote it.
        using (var lite = new LiteDatabase(new ConnectionString { Filename = db, Connection = ConnectionType.Shared }))
        {
            var records = lite.GetCollection("records");
            var doc = records.FindById(id);
            Assert.True(doc.Remove("warnings"));
            records.Update(doc);
        }

        using var reopened = LiteDbMergeRegistry.Open(db);
        var record = await reopened.GetAsync(id) ?? throw new InvalidOperationException("record lost");
        Assert.Empty(record.Warnings);
        Assert.Equal(MergeStatus.Succeeded, record.Status);
        Assert.DoesNotContain("Warnings", RegistryText.Show(record), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_multi_line_error_stays_on_its_row_in_the_list_and_whole_in_show()
    {
        using var temp = new TempFolder();
        using var registry = LiteDbMergeRegistry.Open(temp.File("merges.db"));
        await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "ok");
        var begun = await registry.BeginAsync(Samples.Draft(temp));
        await registry.FailAsync(begun.Id, new InvalidOperationException("3 problems:\n  tensor 'a' is missing\r\n  tensor 'b'\thas NaN"), new Dictionary<string, double>());

        var list = RegistryText.List(await registry.ListAsync(new MergeQuery()));

        var lines = list.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        var failed = Assert.Single(lines, l => l.StartsWith(begun.Id, StringComparison.Ordinal));
        Assert.Contains("error: 3 problems:\\n  tensor", failed, StringComparison.Ordinal);
        Assert.Equal(lines[0].IndexOf("STATUS", StringComparison.Ordinal), failed.IndexOf("failed", StringComparison.Ordinal));

        var show = RegistryText.Show((await registry.GetAsync(begun.Id))!);
        Assert.Contains("tensor 'a' is missing", show, StringComparison.Ordinal);
        Assert.Contains("tensor 'b'\thas NaN", show, StringComparison.Ordinal);
    }

    [Fact]
    public void Show_prints_each_score_table_once()
    {
        using var temp = new TempFolder();
        string[] experts = ["math", "code", "knowledge"];
        var coefficients = Samples.Coefficients(experts);
        var sensitivity = Samples.Sensitivity(experts);
        // As records were written before: every table of the decorator's report under scoreTables and again under coefficients.
        var record = Samples.Draft(temp) with
        {
            ScoreTables = [sensitivity, .. coefficients.Tables],
            Coefficients = coefficients with { Tables = [sensitivity, .. coefficients.Tables] },
        };

        var show = RegistryText.Show(record);

        foreach (var table in record.ScoreTables)
        {
            var body = RegistryText.ScoreTable(table.Rows, table.Columns, table.Values);
            Assert.Equal(1, Occurrences(show, body));
        }
        Assert.Equal(1, Occurrences(show, "Coefficients (sens"));
    }

    [Fact]
    public void Diff_lists_a_decorator_setting_once()
    {
        using var temp = new TempFolder();
        var left = Samples.Draft(temp);
        var right = left with
        {
            Decorators = [left.Decorators[0] with { Parameters = new Dictionary<string, ParameterValue> { ["temperature"] = 4.0, ["alignment"] = "alignment" } }],
            DecoratorSettings = new Dictionary<string, IReadOnlyDictionary<string, ParameterValue>>
            {
                ["sens"] = new Dictionary<string, ParameterValue>(left.DecoratorSettings["sens"]) { ["temperature"] = 4.0 },
            },
        };

        var diff = MergeDiff.Compare(left, right);

        var change = Assert.Single(diff.Parameters);
        Assert.Equal("decoratorSettings[sens].temperature", change.Name);
        Assert.Equal(("2.0", "4.0"), (change.Left, change.Right));
        Assert.Equal(1, Occurrences(diff.ToText(), "temperature"));

        // A configured parameter the decorator does not report is still compared.
        var other = right with
        {
            Decorators = [right.Decorators[0] with { Parameters = new Dictionary<string, ParameterValue>(right.Decorators[0].Parameters) { ["alignment"] = "distance" } }],
        };
        Assert.Contains(MergeDiff.Compare(right, other).Parameters, p => p.Name == "decorators[sens].alignment");
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
