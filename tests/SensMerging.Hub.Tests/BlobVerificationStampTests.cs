using SensMerging.Hub.Client;

namespace SensMerging.Hub.Tests;

public sealed class BlobVerificationStampTests
{
    private const string Sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    [Fact]
    public void A_stamp_is_trusted_only_for_an_unchanged_blob_older_than_the_racy_window()
    {
        using var temp = new TempDir();
        var blob = Path.Combine(temp.Path, "blob");
        var stamp = BlobVerificationStamp.PathFor(temp.Sub("locks"), "blob");
        File.WriteAllBytes(blob, [1, 2, 3, 4]);

        Assert.Null(BlobVerificationStamp.TryTrust(blob, stamp, 4));

        // Written just now: a write in the same clock tick would keep the mtime, so the stamp is not trusted yet.
        BlobVerificationStamp.Write(blob, stamp, Sha);
        Assert.Null(BlobVerificationStamp.TryTrust(blob, stamp, 4));

        File.SetLastWriteTimeUtc(blob, DateTime.UtcNow.AddMinutes(-5));
        BlobVerificationStamp.Write(blob, stamp, Sha);
        Assert.Equal(Sha, BlobVerificationStamp.TryTrust(blob, stamp, 4));
        Assert.Null(BlobVerificationStamp.TryTrust(blob, stamp, 5));

        File.WriteAllBytes(blob, [1, 2, 3, 5]);
        Assert.Null(BlobVerificationStamp.TryTrust(blob, stamp, 4));

        File.WriteAllText(stamp, "v1 garbage");
        Assert.Null(BlobVerificationStamp.TryTrust(blob, stamp, 4));
    }
}
