# schoolproxy logon feed — run at user logon (GPO: User Configuration > Policies > Windows Settings >
# Scripts (Logon/Logoff) > Logon > PowerShell Scripts). Tells the gateway which user is on this PC, so
# requests from its address are attributed without a proxy sign-in. See README.md beside this file.
param(
    [string]$Gateway = "http://10.0.0.1:9465",      # identity.logon_feed.listen on the gateway
    [string]$SecretFile = "\\school.local\NETLOGON\schoolproxy\feed-secret.txt"
)
$ErrorActionPreference = "Stop"
try {
    $secret = (Get-Content -Raw -LiteralPath $SecretFile).Trim()
    $body = @{ user = $env:USERNAME; device = $env:COMPUTERNAME } | ConvertTo-Json -Compress
    # The gateway takes the caller's own address as the client IP; nothing else is needed.
    Invoke-RestMethod -Method Post -Uri "$Gateway/logon" -Body $body -ContentType "application/json" `
        -Headers @{ Authorization = "Bearer $secret" } -TimeoutSec 5 | Out-Null
} catch {
    # Never block the logon: record the problem in the Application log for the network manager.
    Write-EventLog -LogName Application -Source "Application" -EventId 9465 -EntryType Warning `
        -Message "schoolproxy logon feed failed: $($_.Exception.Message)" -ErrorAction SilentlyContinue
}
