using LiteDB;
using SensMerging.Registry.Storage;

namespace SensMerging.Registry.Tests;

public sealed class SchemaTests
{
    [Fact]
    public async Task A_new_file_gets_the_current_schema_version()
    {
        using var temp = new TempFolder();
        using (var registry = LiteDbMergeRegistry.Open(temp.File("merges.db")))
        {
            Assert.Equal(0, registry.OpenedSchemaVersion);
            await registry.BeginAsync(Samples.Draft(temp));
        }
        using (var registry = LiteDbMergeRegistry.Open(temp.File("merges.db")))
        {
            Assert.Equal(LiteDbMergeRegistry.CurrentSchemaVersion, registry.OpenedSchemaVersion);
        }
        using var lite = new LiteDatabase(new ConnectionString { Filename = temp.File("merges.db"), Connection = ConnectionType.Shared });
        Assert.Equal(LiteDbMergeRegistry.CurrentSchemaVersion, lite.GetCollection("meta").FindById("schema")["version"].AsInt32);
    }

    [Fact]
    public async Task A_version_2_file_gets_scores_in_its_summaries()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        string id;
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            id = (await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out")).Id;
            await registry.AddEvaluationAsync(id, new EvaluationResult(temp.File("out"), "math", "exact_match", 0.7, 10, DateTime.UtcNow));
        }
        // What a version-2 registry wrote: the same summary without scores.
        using (var lite = new LiteDatabase(new ConnectionString { Filename = db, Connection = ConnectionType.Shared }))
        {
            var merges = lite.GetCollection("merges");
            var summary = merges.FindById(id);
            summary.Remove("scores");
            merges.Update(summary);
            Migrations.WriteVersion(lite, 2);
        }

        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            Assert.Equal(2, registry.OpenedSchemaVersion);
            Assert.Equal(0.7, (await registry.ListAsync(new MergeQuery())).Single().Scores["math/exact_match"]);
        }
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            Assert.Equal(LiteDbMergeRegistry.CurrentSchemaVersion, registry.OpenedSchemaVersion);
        }
    }

    [Fact]
    public async Task A_version_1_file_without_meta_is_migrated()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        var old = Samples.Draft(temp, "ties") with
        {
            Id = "m-20250101-000000-aaaaaa",
            Status = MergeStatus.Succeeded,
            CreatedAt = new DateTime(2025, 1, 1, 0, 0, 0, DateTimeKind.Utc),
            StartedAt = new DateTime(2025, 1, 1, 0, 0, 0, DateTimeKind.Utc),
            FinishedAt = new DateTime(2025, 1, 1, 0, 5, 0, DateTimeKind.Utc),
            Outputs = Samples.Outputs(temp.File("old-out"), "old"),
            Coefficients = Samples.Coefficients(["math", "code", "knowledge"]),
        };
        // The first layout: one collection, the record under "record", no meta, no model keys.
        using (var lite = new LiteDatabase(new ConnectionString { Filename = db, Connection = ConnectionType.Shared }))
        {
            var merges = lite.GetCollection("merges");
            merges.EnsureIndex("status", "$.status");
            merges.EnsureIndex("createdTicks", "$.createdTicks");
            merges.EnsureIndex("strategy", "$.strategy");
            merges.Insert(new BsonDocument
            {
                ["_id"] = old.Id,
                ["status"] = "succeeded",
                ["createdTicks"] = old.CreatedAt.Ticks,
                ["strategy"] = "ties",
                ["record"] = BsonJson.ToDocument(old),
            });
        }

        using var registry = LiteDbMergeRegistry.Open(db);
        Assert.Equal(1, registry.OpenedSchemaVersion);
        var back = await registry.GetAsync(old.Id);
        Assert.Equal(RegistryJson.Serialize(old), RegistryJson.Serialize(back));
        Assert.Equal(old.Id, Assert.Single(await registry.ListAsync(new MergeQuery { Model = "org/math" })).Id);
        Assert.Equal(old.Id, Assert.Single(await registry.ListAsync(new MergeQuery { Strategy = "ties", Status = MergeStatus.Succeeded })).Id);
        Assert.Equal(old.Id, Assert.Single((await registry.LineageAsync(temp.File("old-out"))).ProducedBy).Id);
        // New merges go in beside it.
        await registry.BeginAsync(Samples.Draft(temp));
        Assert.Equal(2, await registry.CountAsync());
    }

    [Fact]
    public async Task A_newer_schema_is_refused_and_the_file_left_untouched()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            await registry.BeginAsync(Samples.Draft(temp));
        }
        using (var lite = new LiteDatabase(new ConnectionString { Filename = db, Connection = ConnectionType.Shared }))
        {
            Migrations.WriteVersion(lite, LiteDbMergeRegistry.CurrentSchemaVersion + 5);
        }
        var before = await File.ReadAllBytesAsync(db);
        var mtime = File.GetLastWriteTimeUtc(db);
        var ex = Assert.Throws<RegistrySchemaException>(() => LiteDbMergeRegistry.Open(db));
        Assert.Equal(LiteDbMergeRegistry.CurrentSchemaVersion + 5, ex.FileVersion);
        Assert.Contains(db, ex.Message, StringComparison.Ordinal);
        Assert.Equal(before, await File.ReadAllBytesAsync(db));
        Assert.Equal(mtime, File.GetLastWriteTimeUtc(db));
    }
}
