using System.Security.Cryptography;
using LiteDB;
using SensMerging.Registry.Storage;

namespace SensMerging.Registry.Tests;

public sealed class RobustnessTests
{
    private static async Task<string> MakeRegistryAsync(TempFolder temp, int merges)
    {
        var db = temp.File("merges.db");
        using var registry = LiteDbMergeRegistry.Open(db);
        for (var i = 0; i < merges; i++)
        {
            await Samples.CompletedAsync(registry, temp, Samples.Draft(temp), "out" + i);
        }
        return db;
    }

    private static void AssertRefusedUnchanged(string db, string expectedProblem)
    {
        var before = File.ReadAllBytes(db);
        var mtime = File.GetLastWriteTimeUtc(db);
        var ex = Assert.Throws<RegistryCorruptException>(() =>
        {
            using var r = LiteDbMergeRegistry.Open(db);
            r.ListAsync(MergeQuery.All).GetAwaiter().GetResult();
            foreach (var s in r.ListAsync(MergeQuery.All).GetAwaiter().GetResult())
            {
                r.GetAsync(s.Id).GetAwaiter().GetResult();
            }
        });
        Assert.Contains(db, ex.Message, StringComparison.Ordinal);
        Assert.Contains(expectedProblem, ex.Problem, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(before, File.ReadAllBytes(db));
        Assert.Equal(mtime, File.GetLastWriteTimeUtc(db));
        Assert.False(File.Exists(Path.Combine(Path.GetDirectoryName(db)!, "merges-log.db")), "no log file may be created");
    }

    [Fact]
    public void A_text_file_is_not_a_registry_and_is_left_alone()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        File.WriteAllText(db, "merge_method: ties\nthis is somebody's YAML, not a database\n");
        AssertRefusedUnchanged(db, "not a LiteDB database");
    }

    [Fact]
    public void An_empty_file_is_not_silently_recreated()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        File.WriteAllBytes(db, []);
        AssertRefusedUnchanged(db, "empty");
    }

    [Fact]
    public void Random_bytes_are_refused()
    {
        using var temp = new TempFolder();
        var db = temp.File("merges.db");
        File.WriteAllBytes(db, RandomNumberGenerator.GetBytes(3 * 8192));
        AssertRefusedUnchanged(db, "not a LiteDB database");
    }

    [Fact]
    public async Task A_truncated_registry_is_refused_unchanged()
    {
        using var temp = new TempFolder();
        var db = await MakeRegistryAsync(temp, 3);
        var bytes = await File.ReadAllBytesAsync(db);
        Assert.True(bytes.Length >= 3 * 8192);
        await File.WriteAllBytesAsync(db, bytes[..(bytes.Length - 8192)]);
        AssertRefusedUnchanged(db, "truncated");

        await File.WriteAllBytesAsync(db, bytes[..(bytes.Length - 100)]);
        AssertRefusedUnchanged(db, "truncated");
    }

    [Fact]
    public async Task Damaged_pages_give_a_clear_error_and_the_file_is_unchanged()
    {
        using var temp = new TempFolder();
        var db = await MakeRegistryAsync(temp, 4);
        var bytes = await File.ReadAllBytesAsync(db);
        // Keep the header page; overwrite every other page with random bytes.
        var rng = new Random(7);
        var damaged = (byte[])bytes.Clone();
        rng.NextBytes(damaged.AsSpan(8192));
        await File.WriteAllBytesAsync(db, damaged);
        AssertRefusedUnchanged(db, string.Empty);
    }

    [Theory]
    [InlineData(53, 64, 0xFF)]
    [InlineData(40, 200, 0xC3)]
    [InlineData(60, 400, 0x80)]
    [InlineData(32, 2000, -1)]
    public async Task A_damaged_collection_page_gives_the_registry_corruption_error_naming_the_file(int offset, int length, int fill)
    {
        using var temp = new TempFolder();
        var db = await MakeRegistryAsync(temp, 2);
        var bytes = await File.ReadAllBytesAsync(db);
        // LiteDB 5 pages are 8 KiB with a 32-byte header whose byte 4 is the page type (2: collection). A collection page
        // holds the free-page lists (5 x 4 bytes), then its indexes: count, and per index its slot, type, name, expression.
        const int pageSize = 8192;
        var collectionPages = 0;
        for (var page = 1; page < bytes.Length / pageSize; page++)
        {
            var at = page * pageSize;
            if (bytes[at + 4] == 2)
            {
                var damage = bytes.AsSpan(at + offset, length);
                if (fill < 0)
                {
                    new Random(offset).NextBytes(damage);
                }
                else
                {
                    damage.Fill((byte)fill);
                }
                collectionPages++;
            }
        }
        Assert.True(collectionPages > 0, "no collection page found");
        await File.WriteAllBytesAsync(db, bytes);
        AssertRefusedUnchanged(db, string.Empty);
    }

    [Fact]
    public async Task A_missing_folder_is_created()
    {
        using var temp = new TempFolder();
        var db = temp.File("a/b/c/merges.db");
        using (var registry = LiteDbMergeRegistry.Open(db))
        {
            Assert.Equal(0, await registry.CountAsync());
        }
        Assert.True(File.Exists(db));
        Assert.Null(RegistryFileCheck.FindProblem(db));
    }

    [Fact]
    public void A_folder_in_place_of_the_file_is_refused()
    {
        using var temp = new TempFolder();
        Directory.CreateDirectory(temp.File("merges.db"));
        Assert.Throws<RegistryCorruptException>(() => LiteDbMergeRegistry.Open(temp.File("merges.db")));
    }

    [Fact]
    public void A_healthy_file_passes_the_header_check()
    {
        using var temp = new TempFolder();
        var db = temp.File("x.db");
        using (var lite = new LiteDatabase(new ConnectionString { Filename = db, Connection = ConnectionType.Shared }))
        {
            lite.GetCollection("c").Insert(new BsonDocument { ["v"] = 1 });
        }
        Assert.Null(RegistryFileCheck.FindProblem(db));
    }
}
