"""The segments stage: rules parsed into typed trees and evaluated with shared pandas masks (pure pandas)."""
